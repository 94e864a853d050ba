"""ExcessMTL (an aggregator: it needs per-coordinate gradient statistics): torchjd comparison,
pinned values derived by hand, warm-up, state and engine integration."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import Tensor, nn

from multitask.aggregation.excess_mtl import ExcessMTL
from multitask.engine import Engine

F64 = torch.float64


def t64(*values: float) -> Tensor:
    return torch.tensor(values, dtype=F64)


def close(actual: Tensor, expected: Tensor, tol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.detach().to(F64), expected.to(F64), rtol=tol, atol=tol)


def jacobians(seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    random = torch.randn(4, 20, generator=gen, dtype=F64)
    rankdef = torch.rand(4, 2, generator=gen, dtype=F64) @ torch.randn(2, 20, generator=gen, dtype=F64)
    g = torch.randn(20, generator=gen, dtype=F64)
    opposed = torch.stack([g, -g])
    scaled = torch.randn(4, 20, generator=gen, dtype=F64) * torch.logspace(-4, 4, 4, dtype=F64).unsqueeze(1)
    return {"random": random, "rankdef": rankdef, "opposed": opposed, "scaled": scaled}


@pytest.mark.parametrize("case", ["random", "rankdef", "opposed", "scaled"])
def test_matches_torchjd(case: str) -> None:
    # torchjd's ExcessMTLWeighting with n_warmup_steps = 1 takes the first call's excess risk as
    # the baseline and keeps the weights uniform on that call, like ours with warmup_epochs = 0
    # (LibMTL's behaviour); it keeps its weights on the simplex (ours sum to T: same direction,
    # T times smaller) and divides by (baseline + 1e-7) instead of the baseline.
    torchjd = pytest.importorskip("torchjd.aggregation")
    base = jacobians()[case]
    t = base.shape[0]
    ours = ExcessMTL(t, robust_step_size=0.5)
    theirs = torchjd.ExcessMTLWeighting(robust_step_size=0.5, n_warmup_steps=1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        jac = base * (0.5 + torch.rand(t, 1, generator=gen, dtype=F64))
        expected = theirs(jac).to(F64)
        update = ours(jac, torch.ones(t, dtype=F64))
        # torchjd's "+ 1e-7" in the ratio is relative to the excess risk, ~6e-4 for the rows
        # scaled by 1e-4: a 4e-4 relative difference there
        close(ours.task_weights, t * expected, tol=1e-3 if case == "scaled" else 1e-6)
        reference = t * expected @ jac
        if float(reference.norm()) > 1e-9 * float(jac.norm()):
            assert float(update @ reference / (update.norm() * reference.norm())) >= 0.9999
        else:  # opposed with equal weights: both updates vanish
            assert float(update.norm()) <= 1e-9 * float(jac.norm())


def test_pinned_values() -> None:
    # T = 2, P = 1, η = 1. Call 1: J = (1, 2): S = (1, 4), E = (1/sqrt(1 + 1e-7), 4/sqrt(4 + 1e-7))
    # ≈ (1, 2) is the baseline; the weights stay (1, 1) and the update is 1 + 2 = 3.
    agg = ExcessMTL(2, robust_step_size=1.0)
    close(agg(t64(1.0, 2.0).view(2, 1), t64(1.0, 1.0)), t64(3.0))
    close(agg.baseline, t64(1.0, 2.0), tol=1e-7)
    # Call 2: J = (1, 1): S = (2, 5), E = (1/√2, 1/√5), E/E⁰ = (0.70711, 0.22361);
    # w = 2·softmax(E/E⁰) = 2·(1/(1 + e^{-0.48350}), ...) = (1.23714, 0.76286); update = w1 + w2 = 2.
    r = (1 / math.sqrt(2), 1 / math.sqrt(5) / 2)
    p = 1 / (1 + math.exp(-(r[0] - r[1])))
    close(agg(t64(1.0, 1.0).view(2, 1), t64(1.0, 1.0)), t64(2.0), tol=1e-6)
    close(agg.task_weights, t64(2 * p, 2 * (1 - p)), tol=1e-6)
    assert abs(2 * p - 1.23714) < 1e-5


def test_warmup_epochs_average_the_baseline() -> None:
    agg = ExcessMTL(2, robust_step_size=1.0, warmup_epochs=1)
    # warm-up epoch: equal weights, E accumulated: call 1 E = (1, 2) (S = (1, 4)),
    # call 2 J = (1, 2) again: S = (2, 8), E = (1/√2, 4/√8) = (0.70711, 1.41421)
    close(agg(t64(1.0, 2.0).view(2, 1), t64(1, 1)), t64(3.0))
    close(agg(t64(1.0, 2.0).view(2, 1), t64(1, 1)), t64(3.0))
    agg.on_epoch_end()
    # first call after the warm-up: the baseline is the warm-up mean, ((1 + 0.70711)/2, (2 + 1.41421)/2);
    # the weights stay (1, 1) on this call
    agg(t64(1.0, 2.0).view(2, 1), t64(1, 1))
    close(agg.baseline, t64((1 + 1 / math.sqrt(2)) / 2, (2 + math.sqrt(2)) / 2), tol=1e-6)
    close(agg.task_weights, t64(1.0, 1.0))
    agg(t64(3.0, 1.0).view(2, 1), t64(1, 1))
    assert float(agg.task_weights[0]) > 1.0  # task 0's excess risk grew relative to its baseline
    close(agg.task_weights.sum(), torch.tensor(2.0, dtype=F64))


def test_zero_rows_and_extremes() -> None:
    agg = ExcessMTL(2, robust_step_size=1.0)
    # task 1 has a zero gradient at the first call: no baseline for it yet, ratio 0
    agg(t64(1.0, 2.0, 0.0, 0.0).view(2, 2), t64(1, 1))
    assert agg.has_baseline.tolist() == [True, False]
    agg(t64(1.0, 0.0, 0.0, 3.0).view(2, 2), t64(1, 1))
    assert agg.has_baseline.tolist() == [True, True]
    assert torch.isfinite(agg.task_weights).all()
    # a huge excess ratio saturates the weights instead of overflowing
    big = ExcessMTL(2, robust_step_size=1e300)
    big(t64(1.0, 1.0).view(2, 1), t64(1, 1))
    out = big(t64(1e10, 1.0).view(2, 1), t64(1, 1))
    assert torch.isfinite(out).all() and torch.isfinite(big.task_weights).all()
    close(big.task_weights, t64(2.0, 0.0))


def test_state_is_lazily_sized_and_reloadable() -> None:
    agg = ExcessMTL(3)
    assert agg.sq_grad_sum.numel() == 0
    jac = torch.randn(3, 7)
    agg(jac, torch.ones(3))
    assert agg.sq_grad_sum.shape == (3, 7)
    fresh = ExcessMTL(3)
    fresh.load_state_dict(agg.state_dict())
    torch.testing.assert_close(fresh(jac, torch.ones(3)), agg(jac, torch.ones(3)), rtol=0, atol=0)
    with pytest.raises(ValueError, match=re.escape("(3, 8)")):
        agg(torch.randn(3, 8), torch.ones(3))


def test_validation() -> None:
    for kwargs, fragment in [
        ({"robust_step_size": 0.0}, "robust_step_size=0.0"),
        ({"warmup_epochs": -1}, "warmup_epochs=-1"),
        ({"warmup_epochs": 1.5}, "warmup_epochs=1.5"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            ExcessMTL(3, **kwargs)  # type: ignore[arg-type]


def test_trains_through_the_engine() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = torch.stack([x[:, 0], 10 * x[:, 1] + 3 * torch.randn(64)], dim=1)  # task 1 noisy and larger
    trunk, heads = nn.Linear(5, 8), nn.ModuleList(nn.Linear(8, 1) for _ in range(2))
    agg = ExcessMTL(2, robust_step_size=0.1)
    engine = Engine(agg)
    opt = torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=0.05)

    def losses() -> Tensor:
        z = trunk(x)
        return torch.stack([((h(z).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])

    first = losses().detach()
    for _ in range(60):
        opt.zero_grad()
        engine.backward(losses(), list(trunk.parameters()), other_params=list(heads.parameters()))
        opt.step()
    last = losses().detach()
    assert (last < first).all()
    close(agg.task_weights.sum(), torch.tensor(2.0, dtype=F64))
