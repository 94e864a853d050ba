"""The :class:`Weighting` interface: per-task losses (and optionally the Gramian) -> task weights.

Almost every multi-task optimisation method produces one weight per task; the update is then the
gradient of ``Σ_t w_t L_t`` (plus an optional regulariser). Loss-based methods read only the
losses; gradient methods declare ``requires_gramian = True`` and receive ``G = J Jᵀ``, the Gramian
of the task gradients, computed by :mod:`multitask.engine`. A method never calls ``backward``,
never reads ``.grad`` and never reads trainer state.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..registry import Registry, signature_params

__all__ = ["PROPERTIES", "WEIGHTINGS", "Weighting", "create_weighting"]

#: Claims a weighting can declare; the contract tests verify each one it declares.
PROPERTIES: frozenset[str] = frozenset(
    {
        "nonnegative",  # every weight >= 0
        "sums_to_num_tasks",  # weights sum to T (equal weighting gives all ones)
        "on_simplex",  # weights >= 0 and sum to 1
        "permutation_equivariant",  # permuting tasks permutes the weights (stateless methods)
        "loss_scale_invariant",  # multiplying all losses by c > 0 leaves the weights unchanged
        "stateless",  # weights depend only on the current inputs
        "stochastic",  # weights are random (seeded, reproducible)
        "non_conflicting",  # the update g = Jᵀw satisfies G w >= 0: it conflicts with no task gradient
        "gramian_scale_invariant",  # multiplying G by c > 0 leaves the weights unchanged
    }
)


class Weighting(nn.Module, ABC):
    """Base class of every task-weighting method.

    Subclasses set ``name`` (the registry key), ``requires_gramian`` and ``properties``, take
    ``num_tasks`` as their first argument and their hyperparameters as typed keyword-only
    arguments stored under the same names (validated in ``__init__``, never ``**kwargs``), and keep
    any state in buffers or parameters so that ``state_dict()`` checkpoints it.
    """

    name: ClassVar[str] = ""
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(type(self).__name__, num_tasks)

    @abstractmethod
    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Task weights ``[T]`` from detached losses ``[T]`` and, if required, the Gramian ``[T, T]``."""

    def regularizer(self) -> Tensor | None:
        """An extra scalar added to ``Σ w_t L_t`` before the backward pass (None: nothing)."""
        return None

    def on_epoch_end(self) -> None:
        """Called by the trainer after every training epoch (DWA uses it)."""

    def needs_gramian(self) -> bool:
        """Whether this instance needs the Gramian (``requires_gramian``, unless a subclass knows better)."""
        return self.requires_gramian

    def for_tasks(self, num_tasks: int) -> Weighting:
        """A fresh instance with the same hyperparameters for ``num_tasks`` tasks.

        The engine uses it to apply a ``stateless`` method to the tasks present in a batch.
        """
        return type(self)(num_tasks, **self.hyperparameters())

    # --- helpers for subclasses --------------------------------------------------------------
    def _check_inputs(self, losses: Tensor, gramian: Tensor | None) -> None:
        if losses.dim() != 1 or losses.shape[0] != self.num_tasks:
            raise ValueError(
                f"{type(self).__name__}: losses has shape {tuple(losses.shape)}; expected ({self.num_tasks},), "
                "one loss per task"
            )
        if self.requires_gramian:
            if gramian is None:
                raise ValueError(f"{type(self).__name__} needs the Gramian; call it through multitask.engine")
            if gramian.shape != (self.num_tasks, self.num_tasks):
                raise ValueError(
                    f"{type(self).__name__}: gramian has shape {tuple(gramian.shape)}; "
                    f"expected ({self.num_tasks}, {self.num_tasks})"
                )

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments, read back from the attributes of the same name."""
        return {p.name: getattr(self, p.name) for p in signature_params(type(self)) if p.name != "num_tasks"}

    def extra_repr(self) -> str:
        parts = [f"num_tasks={self.num_tasks}"] + [f"{k}={v!r}" for k, v in self.hyperparameters().items()]
        return ", ".join(parts)


WEIGHTINGS: Registry[type[Weighting]] = Registry(
    "weighting", list_hint="Run `multitask list weightings` to see them with their parameters."
)


def register(cls: type[Weighting]) -> type[Weighting]:
    """Class decorator: register a weighting under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name`")
    unknown = cls.properties - PROPERTIES
    if unknown:
        raise ValueError(f"{cls.__name__} declares unknown properties {sorted(unknown)}; known: {sorted(PROPERTIES)}")
    sig = inspect.signature(cls.__init__)
    for p in list(sig.parameters.values())[2:]:
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{cls.__name__}: hyperparameter {p.name!r} must be keyword-only")
    WEIGHTINGS.add(cls.name, cls)
    return cls


def create_weighting(name: str, num_tasks: int, **params: Any) -> Weighting:
    """Build the method ``name`` for ``num_tasks`` tasks; unknown names or parameters get a hint.

    ``name`` may chain stages with ``+`` (``"normalize_gradients+mgda"``): every stage but the last
    rescales the task gradients (see :class:`~multitask.weighting.chain.Chain`). The parameters
    of a chain are given per stage: ``normalize_gradients={"mode": "l2"}``.
    """
    from ..registry import UnknownNameError, check_params, unknown_name_message

    if "+" in name:
        from .chain import Chain

        stages = [s.strip() for s in name.split("+")]
        for key, value in params.items():
            if key not in stages:
                raise UnknownNameError(unknown_name_message(f"stage of the chain {name!r}:", key, stages))
            if not isinstance(value, dict):
                raise ValueError(f"chain {name!r}: parameters of stage {key!r} must be a table, got {value!r}")
        return Chain(*(create_weighting(s, num_tasks, **params.get(s, {})) for s in stages))
    cls = WEIGHTINGS.get(name)
    check_params(f"weighting {name!r}", cls, params, skip=("num_tasks",))
    return cls(num_tasks, **params)


def check_num_tasks(owner: str, num_tasks: object) -> int:
    """Validate ``num_tasks`` (a positive integer) for the method ``owner``; return it."""
    if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks < 1:
        raise ValueError(f"{owner}: num_tasks={num_tasks!r} must be a positive integer")
    return num_tasks


def check_float(owner: str, name: str, value: object, example: str, *, allow_zero: bool = False) -> float:
    """Validate a hyperparameter that must be a finite number > 0 (or >= 0); return it as a float.

    The error names the class, the parameter, the value seen and an example of a valid value.
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value >= 0 if allow_zero else value > 0):  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{owner}: {name}={value!r} must be a finite number {bound}, e.g. {name}={example}")


def as_weights(values: Tensor, like: Tensor) -> Tensor:
    """Cast ``values`` to the dtype and device of ``like``."""
    return values.to(dtype=like.dtype, device=like.device)


def ones_like_tasks(losses: Tensor) -> Tensor:
    return torch.ones_like(losses)


_MASK64 = (1 << 64) - 1


def stream_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit generator seed for draw number ``step`` of stream ``seed`` (SplitMix64)."""
    x = (seed * 0x9E3779B97F4A7C15 + step + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) >> 1
