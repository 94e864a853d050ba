"""Task relationships: which tasks help each other, and which should share a model.

- :func:`group_tasks`: choose groups of tasks, one model per group, from a task-affinity matrix
  (TAG's network selection or a partition), exactly for small ``T`` and by local search for large.
- :func:`load_affinity` / :func:`save_affinity`: the JSON and CSV affinity file formats.
"""

from .grouping import Grouping, group_tasks, load_affinity, save_affinity, score_groups

__all__ = ["Grouping", "group_tasks", "load_affinity", "save_affinity", "score_groups"]
