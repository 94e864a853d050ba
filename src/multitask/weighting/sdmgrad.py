"""SDMGrad: stochastic direction-oriented multi-objective gradient descent."""

from __future__ import annotations

from operator import mul
from typing import ClassVar

import torch
from torch import Tensor

from ._qp import simplex_projection
from .base import Weighting, check_float, register

__all__ = ["SDMGrad"]


@register
class SDMGrad(Weighting):
    """SDMGrad: MGDA-like weights pulled towards the average gradient, by projected SGD.

    The paper's direction-oriented problem keeps the common descent direction near the average
    gradient ``g₀ = Jᵀw̃`` (``w̃ = 1/T``): the weights ``w`` on the simplex minimise
    ``½‖Jᵀw + λ·g₀‖²``, and the update is ``Jᵀ(w + λ·w̃)/(1 + λ)``, whose weights (returned here)
    are on the simplex. ``w`` (a buffer, uniform at first) is warm-started from the previous call
    and improved by ``n_iter`` steps of projected SGD with momentum (the velocity restarts at each
    call): ``v ← momentum·v + Â(w + λw̃)``, ``w ← Π_Δ(w - lr·v)``, where ``Â = A / s²`` is the matrix
    normalised by ``s = mean_t sqrt(max(A_tt, 0))`` (as in the official code, so ``lr`` is
    independent of the gradient scale; here without its ``+1e-8``, which makes the weights exactly
    invariant to that scale; a zero matrix leaves ``w`` unchanged).

    ``lambda_ = 0`` gives MGDA-like weights, a large ``lambda_`` the mean. ``momentum = 0`` is the
    plain projected SGD of the paper's analysis; ``lr``, ``momentum`` and ``n_iter`` default to
    the official implementation's (and torchjd's) practical values; LibMTL uses ``lr = 5``.

    The matrix ``A``: the paper samples independent mini-batches ``ξ, ξ'`` and uses
    ``A = J_ξ J_ξ'ᵀ`` (an unbiased estimate of ``E[J]E[J]ᵀ``) for the ``w`` steps, and a third
    batch ``ζ`` for the update. The engine passes one batch's Gramian ``G = JJᵀ``, so here
    ``A = G``: the paper's iteration with deterministic gradients, but with mini-batches
    ``E[JJᵀ]`` includes the gradient covariance (the bias the double sampling removes). ``forward``
    accepts any ``[T, T]`` matrix (not assumed symmetric), so a caller holding two independent
    batches can pass ``J_ξ J_ξ'ᵀ``. Matches torchjd's ``SDMGradWeighting`` (same defaults,
    ``pref_vector=None``; this class has no preference vector: ``w̃`` is uniform).

    Reference:
        Peiyao Xiao, Hao Ban, Kaiyi Ji, "Direction-oriented Multi-objective Learning: Simple and
        Provable Stochastic Algorithms", NeurIPS 2023. https://arxiv.org/abs/2305.18409

    Args:
        num_tasks: the number of tasks ``T``.
        lr: the step size of the inner projected SGD on ``w`` (> 0).
        momentum: the momentum of the inner SGD, in ``[0, 1)``.
        n_iter: the number of inner steps per call (an integer >= 1).
        lambda_: the pull ``λ >= 0`` towards the average gradient.
    """

    name: ClassVar[str] = "sdmgrad"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "on_simplex", "permutation_equivariant", "gramian_scale_invariant"}
    )

    inner_weights: Tensor

    def __init__(
        self, num_tasks: int, *, lr: float = 10.0, momentum: float = 0.5, n_iter: int = 20, lambda_: float = 0.3
    ) -> None:
        super().__init__(num_tasks)
        self.lr = check_float("SDMGrad", "lr", lr, "10.0")
        self.momentum = check_float("SDMGrad", "momentum", momentum, "0.5", allow_zero=True)
        if self.momentum >= 1.0:
            raise ValueError(f"SDMGrad: momentum={momentum!r} must be in [0, 1), e.g. momentum=0.5")
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"SDMGrad: n_iter={n_iter!r} must be an integer >= 1, e.g. n_iter=20")
        self.n_iter = n_iter
        self.lambda_ = check_float("SDMGrad", "lambda_", lambda_, "0.3", allow_zero=True)
        self.register_buffer("inner_weights", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Weights ``(w + λ/T)/(1 + λ)`` ``[T]`` after ``n_iter`` inner steps on ``w``."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        t = self.num_tasks
        a = gramian.detach().to(dtype=torch.float64, device="cpu")
        s2 = float(a.diagonal().clamp_min(0.0).sqrt().mean()) ** 2
        w = self.inner_weights.tolist()
        if s2 > torch.finfo(torch.float64).tiny and bool(torch.isfinite(a).all()):
            rows = (a / s2).tolist()
            w = _inner_solve(rows, w, self.lambda_, self.lr, self.momentum, self.n_iter)
            self.inner_weights.copy_(torch.tensor(w, dtype=torch.float64))
        out = [(x + self.lambda_ / t) / (1.0 + self.lambda_) for x in w]
        return torch.tensor(out, dtype=losses.dtype, device=losses.device)


def _inner_solve(
    rows: list[list[float]], w: list[float], lambda_: float, lr: float, momentum: float, n_iter: int
) -> list[float]:
    """``n_iter`` steps of projected SGD with momentum on ``½ wᵀÂw + λ wᵀÂw̃`` over the simplex.

    Plain Python floats: for ``T <= 32`` this is several times faster than tensor operations.
    """
    t = len(w)
    pull = [lambda_ * sum(row) / t for row in rows]  # λ·Â·w̃ with w̃ = 1/T
    velocity = [0.0] * t
    for _ in range(n_iter):
        grad = [sum(map(mul, row, w)) + p for row, p in zip(rows, pull, strict=True)]
        velocity = [momentum * v + g for v, g in zip(velocity, grad, strict=True)]
        w = simplex_projection([x - lr * v for x, v in zip(w, velocity, strict=True)])
    return w
