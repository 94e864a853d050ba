"""Aggregators: methods that combine the task Jacobian non-linearly (GradDrop, ConFIG, ...)."""

from .base import Aggregator, register_aggregator

__all__ = ["Aggregator", "register_aggregator"]
