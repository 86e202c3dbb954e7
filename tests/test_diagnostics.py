"""Alignment diagnostics against cases whose answer is known exactly."""
from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from conftest import CONF, compose, read_metrics, run_config, tiny_overrides
from torch import nn

from dtp_bench import diagnostics
from dtp_bench.algorithms.bp import Backprop
from dtp_bench.algorithms.schemas import AlgorithmConfig, FeedbackAlignmentConfig, TargetPropConfig
from dtp_bench.algorithms.target_prop import TargetPropagation
from dtp_bench.config import DiagnosticsConfig, OptimizerConfig
from dtp_bench.nn.blocks import Block, Network, build_fc, build_network
from dtp_bench.nn.lc import LocallyConnected2d
from dtp_bench.nn.schemas import FCArchConfig

CFG = DiagnosticsConfig(every_n_steps=1, jacobian_samples=3)
ZERO = 1e-4  # degrees


def fc_net(widths=(12, 10, 8), inputs=16, classes=5, activation="tanh", seed=0, **arch):
    torch.manual_seed(seed)
    return build_fc(FCArchConfig(hidden=list(widths), activation=activation, **arch), (inputs,),
                    classes).double()


def batch(inputs=16, classes=5, n=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, inputs, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=g))


def tp(net, **overrides):
    base = dict(name="dtp", first_target="output_gradient", target_step=0.5, noise=0.1,
                optimizer=OptimizerConfig(name="sgd", lr=0.1),
                feedback_optimizer=OptimizerConfig(name="sgd", lr=0.1))
    base.update(overrides)
    return TargetPropagation(TargetPropConfig(**base), net, 1).double()  # (AO-SDTP's aux layer)


def keys(out, kind):
    return {k: v for k, v in out.items() if k.startswith(kind + "/")}


def test_angle_helper():
    a = torch.tensor([1.0, 0.0])
    assert diagnostics.angle(a, 3 * a) == 0.0
    assert diagnostics.angle(a, torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert diagnostics.angle(a, -a) == pytest.approx(180.0)
    assert diagnostics.angle(a, torch.zeros(2)) is None


# ---------------------------------------------------------------- update angles
def test_bp_against_itself_is_zero():
    net = fc_net()
    out = diagnostics.measure(Backprop(AlgorithmConfig(name="bp"), net, 1), *batch(), CFG)
    updates = keys(out, "angle_update")
    assert set(updates) == {f"angle_update/block{i}" for i in range(len(net))} | {"angle_update/all"}
    assert max(updates.values()) < ZERO
    assert not keys(out, "angle_jacobian") and not keys(out, "angle_weight")


def test_fa_with_feedback_equal_to_forward_weights_is_bp():
    from dtp_bench.algorithms.fa import FeedbackAlignment

    net = fc_net()
    algo = FeedbackAlignment(FeedbackAlignmentConfig(name="fa"), net, 1)
    x, y = batch()
    random_out = diagnostics.measure(algo, x, y, CFG)
    assert random_out["angle_update/block3"] < ZERO  # the output layer's gradient is exact in FA
    assert random_out["angle_update/block0"] > 1.0
    assert min(keys(random_out, "angle_weight").values()) > 1.0
    with torch.no_grad():
        for block, b in zip(net.blocks, algo.feedback):
            b.copy_(block.weight_op.weight)  # B = W: FA is BP
    out = diagnostics.measure(algo, x, y, CFG)
    assert max(keys(out, "angle_update").values()) < ZERO
    assert set(keys(out, "angle_weight")) == {f"angle_weight/block{i}" for i in range(len(net))}
    assert max(keys(out, "angle_weight").values()) < ZERO


def test_dfa_output_block_gets_the_true_gradient():
    from dtp_bench.algorithms.dfa import DirectFeedbackAlignment

    net = fc_net()
    out = diagnostics.measure(DirectFeedbackAlignment(FeedbackAlignmentConfig(name="dfa"), net, 1), *batch(), CFG)
    assert out["angle_update/block3"] < ZERO and out["angle_update/block0"] > 1.0
    assert not keys(out, "angle_weight") and not keys(out, "angle_jacobian")


@pytest.mark.parametrize("activation", ["tanh", "elu"])
def test_tp_with_jacobian_transpose_feedback_has_zero_update_angles(activation):
    net = fc_net(activation=activation)
    algo = tp(net, feedback="jacobian_transpose", target_loss_reduction="mean", local_loss_reduction="sum")
    out = diagnostics.measure(algo, *batch(), CFG)
    assert len(keys(out, "angle_update")) == len(net) + 1
    assert max(keys(out, "angle_update").values()) < ZERO
    assert not keys(out, "angle_jacobian")  # no feedback functions to compare


def _degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between vec(a) and vec(b) by the textbook arccos (fine away from 0° and 180°)."""
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return math.degrees(math.acos((a @ b / (a.norm() * b.norm())).clamp(-1, 1).item()))


def test_learned_dtp_has_all_diagnostics():
    """Every value against a computation by hand: autograd's Jacobians of f (what g reads: the top
    block's output code [softmax(logits), tanh(A h)] included) and of g, NumPy-free arccos angles,
    and the eigenvalues of the full J_f·J_g."""
    net = fc_net()
    algo = tp(net, first_target="label", name="sdtp", inverse_loss="denoising", aux_output_size=7)
    x, y = batch()
    out = diagnostics.measure(algo, x, y, CFG)
    assert set(keys(out, "angle_jacobian")) == {f"angle_jacobian/block{i}" for i in algo.feedback_blocks}
    assert set(keys(out, "condition")) == {f"condition/block{i}" for i in algo.feedback_blocks}
    # the top feedback reads [softmax, aux]: its weight has no transposed shape
    assert set(keys(out, "angle_weight")) == {f"angle_weight/block{i}" for i in algo.feedback_blocks[:-1]}

    hs = net.activations(x)
    top = len(net) - 1
    for i in algo.feedback_blocks:
        block, g = net.blocks[i], algo.feedback[str(i)]
        if i == top:  # 8 → 12: the code widens, so J_f·J_g (12 × 12) has 4 zero eigenvalues
            def f(h, block=block):
                return torch.cat([torch.softmax(block(h), -1), torch.tanh(algo.aux(h))], -1)
        else:
            f = block
        angles = []
        for s in range(CFG.jacobian_samples):
            h = hs[i][s].detach()
            j_f = torch.autograd.functional.jacobian(f, h)  # (|code|, |h_i|)
            j_g = torch.autograd.functional.jacobian(lambda c: g(c[None], {})[0], f(h).detach())
            angles.append(_degrees(j_g, j_f.T))
            if s == 0:  # the condition: on the first sample, over all |code| eigenvalues
                eig = torch.linalg.eigvals(j_f @ j_g)
                positive = (eig.real > 1e-6 * eig.abs().max()).sum().item()
                assert out[f"condition/block{i}"] == pytest.approx(positive / len(eig), abs=1e-12)
        assert out[f"angle_jacobian/block{i}"] == pytest.approx(sum(angles) / len(angles), abs=1e-6), i
        if i != top:
            weight_angle = _degrees(net.blocks[i].weight_op.weight, g.weight_op.weight.T)
            assert out[f"angle_weight/block{i}"] == pytest.approx(weight_angle, abs=1e-6)
    assert 0 < out[f"condition/block{top}"] <= 8 / 12  # at most 8 of the 12 eigenvalues are non-zero

    # the update angles: SDTP's update of each weight (forward_update's .grad) against backprop's
    twin = copy.deepcopy(algo)
    true = torch.autograd.grad(nn.functional.cross_entropy(twin.network(x), y),
                               [b.weight_op.weight for b in twin.network.blocks])
    twin.forward_update(x, y)
    for i, (block, grad) in enumerate(zip(twin.network.blocks, true)):
        expected = _degrees(block.weight_op.weight.grad, grad)
        # near 0° arccos amplifies rounding: cos = 1 − δ gives √(2δ) rad, and float32 gradients summed in
        # a BLAS-thread-dependent order leave δ ~ 1e-7 (0.03°); away from 0° an error δ in cos moves the angle
        # by δ / sin θ rad, under 1e-3° for θ > 1° (a real mismatch is whole degrees)
        assert out[f"angle_update/block{i}"] == pytest.approx(expected, abs=1e-3 if expected > 1.0 else 0.05)


# ---------------------------------------------------------------- Jacobians and weights
def transposed_linear_dtp(net, scale=1.0):
    """DTP on a linear net whose feedback is exactly scale·Wᵀ (linear output activation)."""
    algo = tp(net, feedback_activation="linear", feedback_bias=False)
    with torch.no_grad():
        for i in algo.feedback_blocks:
            algo.feedback[str(i)].weight_op.weight.copy_(scale * net.blocks[i].weight_op.weight.T)
    return algo


def test_exact_transposed_feedback_on_a_linear_network():
    net = fc_net(widths=(12, 10, 8), activation="linear")
    out = diagnostics.measure(transposed_linear_dtp(net, scale=3.0), *batch(), CFG)
    for kind in ("angle_jacobian", "angle_weight"):
        assert set(keys(out, kind)) == {f"{kind}/block{i}" for i in (1, 2, 3)}
        assert max(keys(out, kind).values()) < ZERO
    # J_f·J_g = 3·W Wᵀ: positive definite when W (out × in) has full row rank, else rank |h_i|
    assert out["condition/block1"] == 1.0 and out["condition/block2"] == 1.0  # 10×12, 8×10
    assert out["condition/block3"] == 1.0  # 5×8
    anti = diagnostics.measure(transposed_linear_dtp(net, scale=-1.0), *batch(), CFG)
    assert min(keys(anti, "angle_jacobian").values()) > 180 - ZERO
    assert max(keys(anti, "condition").values()) == 0.0


def test_condition_counts_the_zero_eigenvalues_of_a_widening_block():
    net = fc_net(widths=(4, 6), inputs=3, classes=2, activation="linear")  # block 1 widens 4 → 6
    out = diagnostics.measure(transposed_linear_dtp(net), *batch(inputs=3, classes=2), CFG)
    assert out["condition/block1"] == pytest.approx(4 / 6)  # W Wᵀ (6×6) has rank 4


def test_condition_is_one_for_an_identity_product():
    net = fc_net(widths=(6, 6, 6), inputs=6, classes=6, activation="linear")
    with torch.no_grad():
        for block in net.blocks:
            block.weight_op.weight.copy_(torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0])
    out = diagnostics.measure(transposed_linear_dtp(net), *batch(inputs=6, classes=6), CFG)
    assert all(v == 1.0 for v in keys(out, "condition").values()) and len(keys(out, "condition")) == 3
    j_f = torch.eye(5) + 0.1 * torch.randn(5, 5)
    assert diagnostics.positive_fraction(j_f, torch.linalg.inv(j_f)) == 1.0


def test_jacobians_of_nonlinear_blocks_match_autograd():
    net = fc_net(activation="tanh")
    algo = tp(net)
    x, _ = batch()
    hs, _ = net.activations_ctx(x)
    h = hs[2][:1]
    j = diagnostics.jacobian(lambda b: net.blocks[2](b), h, 8)
    expected = torch.autograd.functional.jacobian(lambda b: net.blocks[2](b), h).reshape(8, 10)
    torch.testing.assert_close(j, expected)
    g = algo.feedback["2"]
    out = diagnostics.measure(algo, x, batch()[1], DiagnosticsConfig(jacobian_samples=1))
    j_f = expected
    j_g = torch.autograd.functional.jacobian(lambda c: g(c), net.blocks[2](h)).reshape(10, 8)
    assert out["angle_jacobian/block2"] == pytest.approx(diagnostics.angle(j_g, j_f.T))


def small_conv_net(local: bool):
    """Conv or LC (linear) → max pool, then a linear head: the feedback is unpool → transpose."""
    torch.manual_seed(0)
    weight_op = (LocallyConnected2d(2, 3, (8, 8), 3, stride=1) if local  # 8×8 → 8×8 → pool 4×4
                 else nn.Conv2d(2, 3, 3, stride=2, padding=1))  # 8×8 → 4×4 (output_padding 1) → 2×2
    blocks = [Block(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh()),
              Block(weight_op, nn.Identity(), nn.MaxPool2d(2)),
              Block(nn.Flatten(), nn.Linear(3 * (4 if local else 2) ** 2, 4))]
    return Network(blocks, (1, 8, 8), 4).double()


@pytest.mark.parametrize("local", [False, True])
def test_exact_transposed_feedback_through_pooling(local, monkeypatch):
    net = small_conv_net(local)
    algo = tp(net, feedback_activation="linear", feedback_bias=False)
    with torch.no_grad():  # ConvTranspose2d / transposed LC with W: the adjoint of the weight op
        algo.feedback["1"].weight_op.weight.copy_(net.blocks[1].weight_op.weight)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (5,), generator=g)
    out = diagnostics.measure(algo, x, y, CFG)
    assert out["angle_jacobian/block1"] < ZERO and out["angle_weight/block1"] < ZERO
    # random projections give the same 0 (and stay close to the exact angle otherwise)
    monkeypatch.setattr(diagnostics, "MAX_JACOBIAN_ENTRIES", 0)
    projected = diagnostics.measure(algo, x, y, CFG)
    assert projected["angle_jacobian/block1"] < ZERO and "condition/block1" not in projected
    monkeypatch.undo()
    with torch.no_grad():
        algo.feedback["1"].weight_op.weight.add_(torch.randn_like(algo.feedback["1"].weight_op.weight))
    exact = diagnostics.measure(algo, x, y, CFG)["angle_jacobian/block1"]
    monkeypatch.setattr(diagnostics, "MAX_JACOBIAN_ENTRIES", 0)
    monkeypatch.setattr(diagnostics, "N_PROJECTIONS", 512)
    estimate = diagnostics.measure(algo, x, y, CFG)["angle_jacobian/block1"]
    assert exact > 10 and estimate == pytest.approx(exact, abs=3.0)


def test_batch_norm_blocks_use_the_batch_statistics():
    net = fc_net(activation="tanh", batch_norm=True)
    algo = tp(net)
    x, y = batch(n=16)
    out = diagnostics.measure(algo, x, y, CFG)
    assert set(keys(out, "angle_jacobian")) == {f"angle_jacobian/block{i}" for i in algo.feedback_blocks}
    hs, _ = net.activations_ctx(x)
    _, stats = diagnostics._run_block(net.blocks[1], hs[1])
    per_sample, _ = diagnostics._run_block(net.blocks[1], hs[1][3:4], stats)
    torch.testing.assert_close(per_sample, hs[2][3:4])  # sample 3 of the batch, alone


def test_batch_normalised_feedback_is_differentiated_per_sample(monkeypatch):
    # g = BN(σ(V·)) (DTP / FW-DTP with batch norm): with the batch's statistics held, J_g at one
    # sample cannot depend on how many copies of it are stacked to get the rows (with live
    # statistics, identical copies have zero variance and the "Jacobian" is meaningless)
    net = fc_net(activation="tanh", batch_norm=True)
    algo = tp(net)
    x, _ = batch(n=16)
    hs, ctxs = net.activations_ctx(x)
    g = algo.feedback["1"]
    assert any(isinstance(m, diagnostics.BatchNormNoAffine) for m in g.modules())
    code = hs[2][3:4]
    fn = lambda c: g(c, {})  # noqa: E731
    with diagnostics._frozen_batch_statistics(g, lambda: g(hs[2], ctxs[1])):
        stacked = diagnostics.jacobian(fn, code, hs[1].shape[1])
        monkeypatch.setattr(diagnostics, "CHUNK", 1)
        one_at_a_time = diagnostics.jacobian(fn, code, hs[1].shape[1])
        alone = g(code, {})
    torch.testing.assert_close(stacked, one_at_a_time)
    torch.testing.assert_close(alone, g(hs[2], ctxs[1])[3:4])  # sample 3 as in its batch
    torch.testing.assert_close(g(hs[2], ctxs[1]).mean(0), torch.zeros_like(alone[0]), atol=1e-6, rtol=0)  # live again


# ---------------------------------------------------------------- no side effects
def test_measure_leaves_no_trace():
    net = fc_net()
    algo = tp(net)
    x, y = batch()
    algo.train_step(x, y)  # optimizer state and .grad exist
    weights = copy.deepcopy(algo.state_dict())
    grads = {name: p.grad.clone() for name, p in algo.named_parameters() if p.grad is not None}
    optimizers = {k: copy.deepcopy(o.state_dict()) for k, o in algo.optimizers.items()}
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    rng = torch.get_rng_state(), random.getstate(), np.random.get_state()
    update = algo.forward_update  # an update that draws from every generator
    algo.forward_update = lambda x, y: (torch.randn(3), random.random(), np.random.rand(), update(x, y))[-1]
    diagnostics.measure(algo, x, y, CFG)
    assert torch.equal(torch.get_rng_state(), rng[0]) and random.getstate() == rng[1]
    assert np.array_equal(np.random.get_state()[1], rng[2][1])
    for k, v in algo.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for name, p in algo.named_parameters():
        if name in grads:
            assert torch.equal(p.grad, grads[name]), name
        else:
            assert p.grad is None, name
    for k, o in algo.optimizers.items():
        assert str(o.state_dict()) == str(optimizers[k])


@pytest.mark.parametrize("algorithm", ["dtp", "fa"])
def test_training_is_identical_with_diagnostics_on(algorithm, data_root, tmp_path):
    overrides = tiny_overrides(data_root, algorithm=algorithm) + ["trainer.checkpoint=true"]
    run_config(overrides, tmp_path / "off")
    run_config(overrides + ["diagnostics.every_n_steps=2", "diagnostics.jacobian_samples=2"], tmp_path / "on")
    off, on = read_metrics(tmp_path / "off"), read_metrics(tmp_path / "on")
    for row_off, row_on in zip(off, on):
        diag = row_on.pop("diagnostics")
        assert row_on == row_off
        assert diag["count"] == 2 and set(diag["mean"]) == set(diag["last"])  # 4 steps per epoch
        assert all(k.startswith(("angle_", "condition/")) for k in diag["mean"])
        if algorithm == "dtp":
            assert any(k.startswith("angle_jacobian/") for k in diag["mean"])
    json.dumps(on)  # plain JSON
    state_off = torch.load(tmp_path / "off" / "checkpoint.pt", weights_only=True)["algorithm"]["modules"]
    state_on = torch.load(tmp_path / "on" / "checkpoint.pt", weights_only=True)["algorithm"]["modules"]
    for k, v in state_off.items():
        assert torch.equal(v, state_on[k]), k


# ---------------------------------------------------------------- every algorithm
ALGORITHM_PRESETS = sorted(p.stem for p in (CONF / "algorithm").glob("*.yaml"))


@pytest.mark.parametrize("name", ALGORITHM_PRESETS)
def test_every_algorithm_has_update_angles(name):
    from dtp_bench.algorithms.base import build_algorithm
    from dtp_bench.config import validate

    typed = validate(compose([f"algorithm={name}", "arch=fc", "arch.hidden=[12,10]"]))
    torch.manual_seed(0)
    net = build_network(typed.arch, (16,), 5)
    algo = build_algorithm(typed.algorithm, net, 1)
    x, y = torch.randn(8, 16), torch.randint(0, 5, (8,))
    before = copy.deepcopy(algo.state_dict())
    out = diagnostics.measure(algo, x, y, CFG)
    assert {f"angle_update/block{i}" for i in range(len(net))} <= set(out), out
    if len(getattr(algo, "feedback", ())) and hasattr(algo, "feedback_blocks"):
        assert any(k.startswith("angle_jacobian/") for k in out), out
    assert all(math.isfinite(v) for v in out.values())
    for k, v in algo.state_dict().items():
        assert torch.equal(v, before[k]), k
