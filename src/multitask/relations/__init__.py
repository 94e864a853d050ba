"""Task relationships: which tasks help or hurt each other, and which should share a model.

- :class:`AffinityProbe`, :func:`label_similarity`, :func:`spearman`: exact TAG lookahead affinity,
  its cheap estimates and label-space similarity (:mod:`multitask.relations.affinity`);
  ``multitask affinity`` is :func:`multitask.relations.study.run_affinity`.
- :func:`group_tasks`: choose groups of tasks, one model per group, from a task-affinity matrix
  (TAG's network selection or a partition), exactly for small ``T`` and by local search for large.
- :func:`load_affinity` / :func:`save_affinity`: the JSON and CSV affinity file formats.
"""

from .affinity import ESTIMATES, AffinityProbe, label_similarity, spearman
from .grouping import Grouping, group_tasks, load_affinity, save_affinity, score_groups

__all__ = [
    "ESTIMATES",
    "AffinityProbe",
    "Grouping",
    "group_tasks",
    "label_similarity",
    "load_affinity",
    "save_affinity",
    "score_groups",
    "spearman",
]
