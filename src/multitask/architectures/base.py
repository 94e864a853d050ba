"""The multi-task model interface and the architecture registry."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

from torch import Tensor, nn

from ..registry import Registry
from ..tasks import Task

__all__ = ["ARCHITECTURES", "MultiTaskModel", "build_model", "check_widths", "make_heads", "mlp"]


class MultiTaskModel(nn.Module, ABC):
    """A model that maps one input to one output per task.

    Subclasses implement :meth:`forward_features`, returning the outputs and the shared
    representation (or None when the architecture has no single shared representation), and
    :meth:`shared_parameters`.
    """

    task_names: list[str]
    #: whether some parameters are used by several tasks (False: soft sharing, coupled by a penalty)
    shares_parameters: ClassVar[bool] = True

    def regularizer(self) -> Tensor | None:
        """A penalty added (unweighted) to the training objective, e.g. soft sharing's coupling."""
        return None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``{task: output [B, out_dim]}`` from one forward pass."""
        return self.forward_features(x)[0]

    @abstractmethod
    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        """The outputs and the shared features they were computed from (None if there are none)."""

    def forward_task_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor] | None]:
        """Outputs, shared features ``Z``, and the per-task aliases of ``Z`` that each head read.

        The aliases (``Z.view_as(Z)``, one per task: no copy) let the engine get every task's
        ``∂L_t/∂Z`` from ONE backward pass through the heads. The default has none (None).
        """
        outputs, z = self.forward_features(x)
        return outputs, z, None

    @abstractmethod
    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters used by more than one task (the Gramian is taken over these)."""

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """Parameters used by task ``name`` only (default: none)."""
        return iter(())


class HardSharing(MultiTaskModel):
    """Hard parameter sharing: one shared trunk, one head per task.

    Caruana, "Multitask Learning", Machine Learning 28, 1997. https://doi.org/10.1023/A:1007379606734

    Args:
        trunk: any ``nn.Module`` mapping inputs to a representation ``[B, ...]``.
        heads: ``{task name: nn.Module}`` mapping the representation to that task's output.
    """

    def __init__(self, trunk: nn.Module, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("HardSharing: heads is empty; give one head per task")
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)
        self.task_names = list(heads)

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        z = self.trunk(x)
        return {name: head(z) for name, head in self.heads.items()}, z

    def forward_task_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor] | None]:
        z = self.trunk(x)
        views = {name: z.view_as(z) for name in self.heads}
        return {name: head(views[name]) for name, head in self.heads.items()}, z, views

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        return self.heads[name].parameters()


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def mlp(in_features: int, hidden: Sequence[int], *, activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """Flatten, then ``Linear -> activation [-> Dropout]`` for each width in ``hidden``."""
    if activation not in _ACTIVATIONS:
        from ..registry import UnknownNameError, unknown_name_message

        raise UnknownNameError(unknown_name_message("activation", activation, list(_ACTIVATIONS)))
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), _ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    return nn.Sequential(*layers)


def check_widths(arch: str, name: str, widths: Sequence[int], *, allow_empty: bool = True) -> list[int]:
    """``widths`` as a list of positive ints, or a ValueError naming the architecture and parameter."""
    out = list(widths)
    if any((not isinstance(w, int)) or isinstance(w, bool) or w < 1 for w in out):
        raise ValueError(f"{arch}: {name}={out!r}; every width must be a positive integer")
    if not out and not allow_empty:
        raise ValueError(f"{arch}: {name}=[] is empty; give at least one width")
    return out


def check_dropout(arch: str, dropout: float) -> None:
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"{arch}: dropout={dropout!r} must be in [0, 1)")


def make_heads(
    tasks: Sequence[Task], in_features: int, hidden: Sequence[int], *, activation: str = "relu", dropout: float = 0.0
) -> dict[str, nn.Module]:
    """One MLP head per task: ``hidden`` layers, then ``Linear(., task.output_dim)``."""
    heads: dict[str, nn.Module] = {}
    for task in tasks:
        body = mlp(in_features, hidden, activation=activation, dropout=dropout)
        heads[task.name] = nn.Sequential(*body, nn.Linear(hidden[-1] if hidden else in_features, task.output_dim))
    return heads


def flat_size(input_shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in input_shape)


ArchitectureBuilder = Callable[..., MultiTaskModel]
ARCHITECTURES: Registry[ArchitectureBuilder] = Registry(
    "architecture", list_hint="Run `multitask list architectures` to see them with their parameters."
)


def build_model(name: str, input_shape: Sequence[int], tasks: Sequence[Task], **params: object) -> MultiTaskModel:
    """Build the registered architecture ``name`` for inputs of ``input_shape`` and these tasks."""
    from ..registry import check_params

    builder = ARCHITECTURES.get(name)
    check_params(f"architecture {name!r}", builder, params, skip=("input_shape", "tasks"))
    return builder(input_shape=tuple(input_shape), tasks=list(tasks), **params)
