"""Task relationships: which tasks help or hurt each other, and which should share a model."""

from .affinity import ESTIMATES, AffinityProbe, label_similarity, spearman

__all__ = ["ESTIMATES", "AffinityProbe", "label_similarity", "spearman"]
