"""Hyperparameters of the multi-task GP and their packing into optimizer vectors.

An LMC with ``Q`` components: component ``q`` has an input kernel with lengthscales
``exp(log_ls[q])`` (one per feature) and a task matrix ``B_q = W_q W_qᵀ + diag(exp(log_kappa[q]))``
(``W_q`` of shape ``(T, rank)``); every task has its own noise variance ``exp(log_noise[t])``.
ICM is ``Q = 1``. The optimizer sees two vectors: the *outer* one (all log-lengthscales, which
change the input kernel matrices and need a new decomposition) and the *inner* one (``W``,
``log_kappa``, ``log_noise``, which do not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Hyper", "HyperLayout"]

Array = NDArray[np.float64]


@dataclass
class Hyper:
    """Hyperparameters (or gradients with the same layout)."""

    log_ls: list[Array]
    W: list[Array]
    log_kappa: list[Array]
    log_noise: Array

    def B(self, q: int) -> Array:
        """Task matrix of component ``q``."""
        out: Array = self.W[q] @ self.W[q].T + np.diag(np.exp(self.log_kappa[q]))
        return out

    def copy(self) -> Hyper:
        return Hyper(
            [a.copy() for a in self.log_ls],
            [a.copy() for a in self.W],
            [a.copy() for a in self.log_kappa],
            self.log_noise.copy(),
        )


@dataclass(frozen=True)
class HyperLayout:
    """Shapes: ``Q`` components, ``d`` features, ``T`` tasks, coregionalization rank ``r``."""

    Q: int
    d: int
    T: int
    r: int

    @property
    def n_outer(self) -> int:
        return self.Q * self.d

    @property
    def n_inner(self) -> int:
        return self.Q * (self.T * self.r + self.T) + self.T

    def pack_outer(self, h: Hyper) -> Array:
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in h.log_ls])

    def pack_inner(self, h: Hyper) -> Array:
        parts = [w.ravel() for w in h.W] + [k.ravel() for k in h.log_kappa] + [h.log_noise.ravel()]
        return np.concatenate(parts).astype(np.float64)

    def unpack(self, outer: Array, inner: Array) -> Hyper:
        Q, d, T, r = self.Q, self.d, self.T, self.r
        log_ls = [np.array(outer[q * d : (q + 1) * d]) for q in range(Q)]
        W = [np.array(inner[q * T * r : (q + 1) * T * r]).reshape(T, r) for q in range(Q)]
        off = Q * T * r
        log_kappa = [np.array(inner[off + q * T : off + (q + 1) * T]) for q in range(Q)]
        log_noise = np.array(inner[off + Q * T : off + Q * T + T])
        return Hyper(log_ls, W, log_kappa, log_noise)

    def inner_bounds(
        self, noise_bounds: tuple[float, float], kappa_bounds: tuple[float, float]
    ) -> list[tuple[float | None, float | None]]:
        b: list[tuple[float | None, float | None]] = [(None, None)] * (self.Q * self.T * self.r)
        b += [kappa_bounds] * (self.Q * self.T)
        b += [noise_bounds] * self.T
        return b
