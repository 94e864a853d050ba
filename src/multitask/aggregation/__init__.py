"""Aggregators: methods that combine the task Jacobian non-linearly (GradDrop, ConFIG, ...)."""

from .base import Aggregator, register_aggregator
from .config_method import ConFIG
from .db_mtl import DBMTL
from .excess_mtl import ExcessMTL
from .graddrop import GradDrop
from .moco import MoCo

__all__ = ["DBMTL", "Aggregator", "ConFIG", "ExcessMTL", "GradDrop", "MoCo", "register_aggregator"]
