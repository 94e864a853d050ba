"""Task samplers: which source dataset each draw of a multi-input epoch comes from.

A multi-input dataset (see :mod:`multitask.data.multi_input`) trains on several source datasets
at once, each labelling its own tasks. In every epoch a :class:`TaskSampler` decides, for each
draw, which source it comes from. A draw is one row (``unit="row"``: mixed batches) or one whole
batch (``unit="batch"``: every batch from a single source).

Probability samplers give each source ``k`` (``n_k`` training rows) a probability ``p_k`` for the
epoch. The number of draws of each source in an epoch is then *fixed*, not random: the
largest-remainder rounding of ``draws * p_k`` (so it is within one of ``draws * p_k``), and only
the order of the draws is random. This keeps the expected mix of i.i.d. sampling with less
variance, and with the proportional sampler and ``unit="row"`` every training row is seen exactly
once per epoch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..registry import Registry, UnknownNameError, unknown_name_message

__all__ = [
    "SAMPLERS",
    "UNITS",
    "AnnealedSampler",
    "ProportionalSampler",
    "RoundRobinSampler",
    "TaskSampler",
    "TemperatureSampler",
    "create_sampler",
    "largest_remainder",
]

UNITS: tuple[str, ...] = ("row", "batch")

SAMPLERS: Registry[type[TaskSampler]] = Registry(
    "sampler", list_hint="Run `multitask list samplers` to see them with their parameters."
)


def _check_number(owner: str, name: str, value: Any, *, low: float, low_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name}={value!r} must be a number")
    v = float(value)
    ok = math.isfinite(v) and (v >= low if low_inclusive else v > low)
    if not ok:
        raise ValueError(f"{owner}: {name}={value!r} must be a finite number {'>=' if low_inclusive else '>'} {low:g}")
    return v


def largest_remainder(probabilities: Sequence[float] | NDArray[np.float64], draws: int) -> NDArray[np.int64]:
    """Integer counts summing to ``draws``, each within one of ``draws * p_k`` (Hamilton's method).

    Every count gets ``floor(draws * p_k)``; the draws left over go to the largest fractional
    parts, ties to the lower index. Deterministic.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / p.sum()
    quota = draws * p
    base: NDArray[np.int64] = np.floor(quota + 1e-9).astype(np.int64)  # 1e-9: 2.9999999 is 3, not 2 plus a remainder
    left = int(draws - base.sum())
    if left > 0:
        order = np.argsort(-(quota - base), kind="stable")
        base[order[:left]] += 1
    return base


class TaskSampler(ABC):
    """Chooses the source of each draw of one epoch of multi-input training.

    Subclasses set ``name`` (the registry key) and implement :meth:`probabilities`; their
    hyperparameters are typed keyword-only ``__init__`` arguments stored under the same name, and
    every sampler takes ``unit``.

    Args:
        unit: what one draw picks a source for: ``"row"`` (each row of a batch; batches mix the
            sources, so every task is usually present in every batch) or ``"batch"`` (each batch
            comes from one source and carries only that source's tasks).
    """

    name: ClassVar[str]

    def __init__(self, *, unit: str = "row") -> None:
        if unit not in UNITS:
            raise UnknownNameError(unknown_name_message(f"{type(self).__name__} unit", str(unit), list(UNITS)))
        self.unit = unit

    @abstractmethod
    def probabilities(self, sizes: Sequence[int], *, epoch: int) -> NDArray[np.float64]:
        """The probability of each source in epoch ``epoch`` (0-based), given the sources' row counts."""

    def counts(self, sizes: Sequence[int], draws: int, *, epoch: int) -> NDArray[np.int64]:
        """How many of the epoch's ``draws`` each source gets (see :func:`largest_remainder`)."""
        return largest_remainder(self.probabilities(sizes, epoch=epoch), draws)

    def schedule(self, sizes: Sequence[int], draws: int, *, epoch: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """The source index of each of the epoch's ``draws``: :meth:`counts` of each, in a random order."""
        counts = self.counts(sizes, draws, epoch=epoch)
        return rng.permutation(np.repeat(np.arange(len(sizes), dtype=np.int64), counts))

    def hyperparameters(self) -> dict[str, Any]:
        """The ``__init__`` arguments, by name (for repr and configs)."""
        from ..registry import signature_params

        return {p.name: getattr(self, p.name) for p in signature_params(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TaskSampler)
            and type(other) is type(self)
            and self.hyperparameters() == other.hyperparameters()
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.hyperparameters().items()))))


def _sizes(sizes: Sequence[int]) -> NDArray[np.float64]:
    s = np.asarray(sizes, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0 or bool((s <= 0).any()):
        raise ValueError(f"source sizes {list(sizes)} must be one or more positive row counts")
    return s


def _power(sizes: Sequence[int], exponent: float) -> NDArray[np.float64]:
    s = _sizes(sizes)
    logits = exponent * np.log(s)  # n^a / Σ n^a, computed stably in log space
    w = np.exp(logits - logits.max())
    p: NDArray[np.float64] = w / w.sum()
    return p


@SAMPLERS.register("proportional")
class ProportionalSampler(TaskSampler):
    """Each source in proportion to its training size: ``p_k = n_k / Σ n``.

    "Examples-proportional mixing" of Raffel et al., "Exploring the Limits of Transfer Learning
    with a Unified Text-to-Text Transformer", JMLR 21(140), 2020 (Section 3.5.2), without their
    artificial size limit. https://jmlr.org/papers/v21/20-074.html

    With ``unit="row"`` every training row of every source is seen exactly once per epoch.
    """

    name = "proportional"

    def __init__(self, *, unit: str = "row") -> None:
        super().__init__(unit=unit)

    def probabilities(self, sizes: Sequence[int], *, epoch: int) -> NDArray[np.float64]:
        return _power(sizes, 1.0)


@SAMPLERS.register("temperature")
class TemperatureSampler(TaskSampler):
    """Temperature-scaled sampling: ``p_k ∝ n_k^(1/T)``; T = 1 is proportional, large T near uniform.

    Arivazhagan et al., "Massively Multilingual Neural Machine Translation in the Wild: Findings
    and Challenges", arXiv 2019 (Section 4.2): temperature-based data sampling, T = 5 balancing
    high- and low-resource languages. https://arxiv.org/abs/1907.05019

    Args:
        temperature: T > 0.
        unit: "row" or "batch" (see :class:`TaskSampler`).
    """

    name = "temperature"

    def __init__(self, *, temperature: float = 5.0, unit: str = "row") -> None:
        super().__init__(unit=unit)
        self.temperature = _check_number("TemperatureSampler", "temperature", temperature, low=0.0)

    def probabilities(self, sizes: Sequence[int], *, epoch: int) -> NDArray[np.float64]:
        return _power(sizes, 1.0 / self.temperature)


@SAMPLERS.register("round_robin")
class RoundRobinSampler(TaskSampler):
    """The sources in turn, in a fixed cycle: draw ``i`` comes from source ``i mod K``.

    The "round-robin batch-level sampling" of McCann et al., "The Natural Language Decathlon:
    Multitask Learning as Question Answering", arXiv 2018 (Section 4, fully joint training).
    https://arxiv.org/abs/1806.08730

    Sizes are ignored (every source gets an equal share, within one draw); a small source is
    cycled through more often than a large one. With ``unit="row"`` each batch holds the sources
    in equal numbers; ``unit="batch"`` is the paper's batch-level cycle.
    """

    name = "round_robin"

    def __init__(self, *, unit: str = "row") -> None:
        super().__init__(unit=unit)

    def probabilities(self, sizes: Sequence[int], *, epoch: int) -> NDArray[np.float64]:
        k = len(_sizes(sizes))
        return np.full(k, 1.0 / k)

    def schedule(self, sizes: Sequence[int], draws: int, *, epoch: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """``0, 1, ..., K-1, 0, 1, ...``: the same in every epoch (the rows within a source still change)."""
        return np.arange(draws, dtype=np.int64) % len(_sizes(sizes))


@SAMPLERS.register("annealed")
class AnnealedSampler(TaskSampler):
    """Annealed sampling: ``p_k ∝ n_k^α`` with ``α`` moved linearly from ``alpha_start`` to ``alpha_end``.

    Stickland & Murray, "BERT and PALs: Projected Attention Layers for Efficient Adaptation in
    Multi-Task Learning", ICML 2019 (Section 4): ``α = 1 - 0.8 (e - 1) / (E - 1)`` in epoch
    ``e = 1..E``, from proportional sampling towards equal sampling, so that the tasks are seen
    more equally late in training. https://proceedings.mlr.press/v97/stickland19a.html

    In epoch ``e`` (0-based) ``α = alpha_start + (alpha_end - alpha_start) * min(e, E - 1) / (E - 1)``
    with ``E = epochs`` (``α = alpha_start`` when ``E = 1``); ``α`` stays at ``alpha_end`` after
    epoch ``E``. The temperature of :class:`TemperatureSampler` is ``T = 1 / α``.

    Args:
        epochs: E, the number of epochs over which ``α`` is annealed (in a config, it defaults to
            ``train.epochs``).
        alpha_start: ``α`` of the first epoch (1.0: proportional).
        alpha_end: ``α`` of epoch E (0.2 as in the paper; 0: uniform).
        unit: "row" or "batch" (the paper samples one task per batch: ``unit="batch"``).
    """

    name = "annealed"

    def __init__(self, *, epochs: int, alpha_start: float = 1.0, alpha_end: float = 0.2, unit: str = "row") -> None:
        super().__init__(unit=unit)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"AnnealedSampler: epochs={epochs!r} must be a positive integer (the annealing horizon)")
        self.epochs = epochs
        self.alpha_start = _check_number("AnnealedSampler", "alpha_start", alpha_start, low=0.0, low_inclusive=True)
        self.alpha_end = _check_number("AnnealedSampler", "alpha_end", alpha_end, low=0.0, low_inclusive=True)

    def alpha(self, epoch: int) -> float:
        """``α`` of epoch ``epoch`` (0-based)."""
        if self.epochs == 1:
            return self.alpha_start
        frac = min(max(epoch, 0), self.epochs - 1) / (self.epochs - 1)
        return self.alpha_start + (self.alpha_end - self.alpha_start) * frac

    def probabilities(self, sizes: Sequence[int], *, epoch: int) -> NDArray[np.float64]:
        return _power(sizes, self.alpha(epoch))


def create_sampler(name: str, **params: Any) -> TaskSampler:
    """The registered sampler ``name`` with keyword ``params`` (unknown names say "did you mean")."""
    sampler: TaskSampler = SAMPLERS.create(name, **params)
    return sampler
