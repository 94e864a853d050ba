"""Per-architecture reference values: parameter counts, special cases, hand-computed penalties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multitask.architectures import build_model
from multitask.architectures.dselect_k import DSelectGate, smooth_step
from multitask.tasks import Task

TWO = [Task("a", "regression"), Task("b", "binary")]


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts() -> None:
    # cross-stitch, 2 columns 3->4->2, two 2->1 heads, two 2x2 stitch units
    assert count(build_model("cross_stitch", (3,), TWO, hidden=[4, 2])) == 2 * (16 + 10) + 2 * 3 + 2 * 4
    # soft sharing: two towers 3->4, two heads 4->1
    assert count(build_model("soft_sharing", (3,), TWO, hidden=[4])) == 2 * 16 + 2 * 5
    # MMoE: 3 experts 3->4, two gates 3->3, two heads 4->1
    assert (
        count(build_model("mmoe", (3,), TWO, experts=3, expert_hidden=[4], head_hidden=[])) == 3 * 16 + 2 * 12 + 2 * 5
    )
    # CGC: 1 shared + 1 per task experts 3->4, two gates 3->2, two heads
    assert count(
        build_model("cgc", (3,), TWO, shared_experts=1, task_experts=1, expert_hidden=[4], head_hidden=[])
    ) == (3 * 16 + 2 * 8 + 2 * 5)
    # PLE, 2 levels: level 0 as CGC plus a shared gate 3->3; level 1 experts 4->4, gates 4->2
    ple = build_model("ple", (3,), TWO, levels=2, shared_experts=1, task_experts=1, expert_hidden=[4], head_hidden=[])
    assert count(ple) == (3 * 16 + 2 * 8 + 12) + (3 * 20 + 2 * 10) + 2 * 5
    # sluice: 2 columns 3->4->4, 2 alphas (4x4), 2 betas (2), two heads
    assert count(build_model("sluice", (3,), TWO, hidden=[4, 4])) == 2 * (16 + 20) + 2 * 16 + 2 * 2 + 2 * 5


def test_cross_stitch_with_identity_units_is_independent_columns() -> None:
    model = build_model("cross_stitch", (3,), TWO, hidden=[4, 4], self_weight=1.0)
    model(torch.randn(5, 3))["a"].sum().backward()
    column_b = [p for layer in model.layers for p in layer[1].parameters()]
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in column_b)


def test_soft_sharing_penalties() -> None:
    torch.manual_seed(0)
    model = build_model("soft_sharing", (2,), TWO, hidden=[3], strength=0.5)
    towers = [list(model.towers[t].parameters()) for t in ("a", "b")]
    expected = sum(0.5 * float(((pa - pb) ** 2).sum().detach()) for pa, pb in zip(*towers, strict=True))
    assert float(model.regularizer()) == pytest.approx(0.5 * expected, rel=1e-6)  # distance to the mean
    model.penalty = "trace"
    nuclear = sum(
        np.linalg.svd(np.stack([pa.detach().numpy().ravel(), pb.detach().numpy().ravel()]), compute_uv=False).sum()
        for pa, pb in zip(*towers, strict=True)
    )
    assert float(model.regularizer()) == pytest.approx(0.5 * nuclear, rel=1e-5)
    model.regularizer().backward()
    assert all(p.grad is not None for t in towers for p in t if p.dim() > 0)


def test_mmoe_with_one_expert_is_hard_sharing() -> None:
    model = build_model("mmoe", (3,), TWO, experts=1, expert_hidden=[4], head_hidden=[])
    x = torch.randn(6, 3)
    z = model.experts[0](x)
    torch.testing.assert_close(model(x)["a"], model.heads["a"](z))


def test_sluice_orthogonality_penalty() -> None:
    model = build_model("sluice", (3,), TWO, hidden=[4, 4], strength=2.0)
    total = 0.0
    for col in model.layers:
        for module in col:
            w = module[0].weight.detach()
            total += float(((w[:2] @ w[2:].T) ** 2).sum())
    assert float(model.regularizer()) == pytest.approx(2.0 * total, rel=1e-5)


def test_smooth_step() -> None:
    t = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    torch.testing.assert_close(smooth_step(t, 1.0), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    # C1: the cubic's slope vanishes at ±γ/2
    x = torch.tensor([-0.4999, 0.4999], requires_grad=True)
    (g,) = torch.autograd.grad(smooth_step(x, 1.0).sum(), x)
    assert float(g.abs().max()) < 1e-3


@pytest.mark.parametrize("experts", [4, 5])
def test_dselect_gate_is_a_distribution_and_selects_by_binary_code(experts: int) -> None:
    gate = DSelectGate(3, experts, k=1, gamma=1.0, per_example=False)
    x = torch.randn(4, 3)
    g = gate(x)
    assert g.shape == (4, experts)
    torch.testing.assert_close(g.sum(-1), torch.ones(4))
    with torch.no_grad():  # saturate the bits (least significant first) to the code of expert 2 (binary ..010)
        gate.z_param.copy_(torch.tensor([[-5.0, 5.0, -5.0][: gate.m]]))
    torch.testing.assert_close(gate(x), torch.nn.functional.one_hot(torch.full((4,), 2), experts).float())
    assert float(gate.entropy()) == pytest.approx(0.0, abs=1e-6)


def test_mtan_masks_select_from_the_shared_features() -> None:
    model = build_model("mtan", (1, 8, 8), TWO, widths=[4, 8])
    x = torch.randn(3, 1, 8, 8)
    mask = model.attention["a"][0](model.backbone[0](x))
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert model(x)["a"].shape == (3, 1)
