"""The target-propagation engine against mathematical facts (tp, dtp, sdtp, ao_sdtp)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dtp_bench.algorithms.bp import Backprop
from dtp_bench.algorithms.schemas import AlgorithmConfig, TargetPropConfig
from dtp_bench.algorithms.target_prop import TargetPropagation, squared_error
from dtp_bench.config import OptimizerConfig
from dtp_bench.nn.blocks import build_fc
from dtp_bench.nn.schemas import FCArchConfig
from conftest import loss_before_after


def fc_net(widths=(12, 10, 8), inputs=16, classes=5, activation="tanh", dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return build_fc(FCArchConfig(hidden=list(widths), activation=activation), (inputs,), classes).to(dtype)


def variant(name: str, **overrides) -> TargetPropConfig:
    """The YAML defaults of each variant, in code."""
    base = dict(name=name, schedule="parallel", first_target="penultimate_gradient", target_step=0.1,
                inverse_loss="noise_preserving", noise=0.1,
                optimizer=OptimizerConfig(name="adam", lr=1e-3),
                feedback_optimizer=OptimizerConfig(name="adam", lr=1e-3))
    if name == "tp":
        base.update(propagation="plain")
    if name in ("sdtp", "ao_sdtp"):
        base.update(first_target="label", inverse_loss="denoising")
    if name == "ao_sdtp":
        base.update(aux_output_size=32)
    base.update(overrides)
    return TargetPropConfig(**base)


# ---------------------------------------------------------------- exact inverses
class ExactInverse(nn.Module):
    """f⁻¹ for f(h) = leaky_relu(W h + b, a): h = W⁻¹ (leaky_relu(y, 1/a) − b)."""

    def __init__(self, linear: nn.Linear, slope: float):
        super().__init__()
        self.linear, self.slope = linear, slope

    def forward(self, y, ctx=None):
        pre = torch.nn.functional.leaky_relu(y, 1.0 / self.slope)
        return torch.linalg.solve(self.linear.weight, (pre - self.linear.bias).T).T


def test_dtp_targets_are_consistent_with_exact_inverses():
    torch.manual_seed(0)
    width, slope = 6, 0.2
    cfg = FCArchConfig(hidden=[width] * 4, activation="leaky_relu", negative_slope=slope)
    net = build_fc(cfg, (width,), width).double()  # square weights throughout
    for block in net.blocks[:-1]:
        with torch.no_grad():  # well conditioned, invertible weights
            block.weight_op.weight.copy_(torch.linalg.qr(torch.randn(width, width, dtype=torch.float64))[0])
    algo = TargetPropagation(variant("dtp"), net, 1)
    for i in algo.feedback_blocks:
        algo.feedback[str(i)] = ExactInverse(net.blocks[i].weight_op, slope)
    x, y = torch.randn(7, width, dtype=torch.float64), torch.randint(0, width, (7,))
    hs, ctxs = net.activations_ctx(x)
    targets = algo.targets(hs, ctxs, y)
    assert targets[algo.first_level].shape == hs[algo.first_level].shape
    moved = False
    for i in algo.feedback_blocks:
        with torch.no_grad():
            forward_of_target = net.blocks[i](targets[i])
        torch.testing.assert_close(forward_of_target, targets[i + 1], atol=1e-10, rtol=1e-10)
        moved |= not torch.allclose(targets[i], hs[i])
    assert moved, "targets should differ from the activations"


# ---------------------------------------------------------------- TP with Jacobian feedback is BP
@pytest.mark.parametrize("activation", ["tanh", "elu"])
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_tp_with_jacobian_transpose_feedback_equals_scaled_backprop(activation, beta):
    net = fc_net(activation=activation)
    x, y = torch.randn(9, 16, dtype=torch.float64), torch.randint(0, 5, (9,))

    bp_net = copy.deepcopy(net)
    Backprop(AlgorithmConfig(name="bp"), bp_net, 1).forward_update(x, y)

    cfg = variant("dtp", first_target="output_gradient", feedback="jacobian_transpose", target_step=beta,
                  target_loss_reduction="mean", local_loss_reduction="sum", local_loss_scale=0.5)
    algo = TargetPropagation(cfg, net, 1)
    assert len(algo.feedback) == 0
    algo.forward_update(x, y)
    for p_tp, p_bp in zip(net.parameters(), bp_net.parameters()):
        torch.testing.assert_close(p_tp.grad, beta * p_bp.grad, atol=1e-6, rtol=1e-6)


def test_local_loss_reductions():
    h, t = torch.ones(4, 3), torch.zeros(4, 3)
    assert squared_error(h, t, "sum").item() == 12
    assert squared_error(h, t, "batch_mean", 0.5).item() == 1.5
    assert squared_error(h, t, "mean").item() == 1


# ---------------------------------------------------------------- feedback training
@pytest.mark.parametrize("name", ["dtp", "sdtp", "ao_sdtp"])
def test_inverse_loss_goes_down_on_a_fixed_forward_net(name):
    net = fc_net(widths=(20, 20, 20), dtype=torch.float32)
    before_weights = [p.clone() for p in net.parameters()]
    algo = TargetPropagation(variant(name, feedback_optimizer=OptimizerConfig(name="adam", lr=3e-3)), net, 1)
    torch.manual_seed(1)
    x = torch.randn(256, 16)
    with torch.no_grad():
        hs = net.activations(x)
        start = algo.inverse_loss(hs).item()
    for _ in range(300):
        algo.train_feedback(x, None)
    with torch.no_grad():
        end = algo.inverse_loss(hs).item()
    assert end < 0.5 * start, (start, end)
    for p, q in zip(net.parameters(), before_weights):
        assert torch.equal(p, q), "feedback training must not touch forward weights"


@pytest.mark.parametrize("kind", ["noise_preserving", "denoising"])
def test_inverse_loss_reconstructs_the_right_reference(kind):
    """Noise-preserving regresses g(f(h+ε)) onto h+ε, denoising onto h."""
    net = fc_net(dtype=torch.float64)
    algo = TargetPropagation(variant("dtp", inverse_loss=kind, noise=0.3), net, 1)
    x = torch.randn(32, 16, dtype=torch.float64)
    hs = net.activations(x)
    torch.manual_seed(5)
    loss = algo.inverse_loss(hs)
    torch.manual_seed(5)  # the same noise, by hand
    expected = 0.0
    for i in algo.feedback_blocks:
        noisy = hs[i] + 0.3 * torch.randn_like(hs[i])
        rec = algo.feedback[str(i)](net.blocks[i](noisy))
        ref = noisy if kind == "noise_preserving" else hs[i]
        expected += (rec - ref).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------- locality
def record_inputs(net) -> dict[int, list[bool]]:
    """Whether each call into a block (forward or forward_ctx) got an input that carries a graph."""
    seen: dict[int, list[bool]] = {i: [] for i in range(len(net))}
    for i, block in enumerate(net.blocks):
        for method in ("forward", "forward_ctx"):
            original = getattr(block, method)

            def wrapped(x, *args, _original=original, _i=i, **kwargs):
                seen[_i].append(x.requires_grad)
                return _original(x, *args, **kwargs)
            setattr(block, method, wrapped)
    return seen


@pytest.mark.parametrize("name", ["sdtp", "ao_sdtp"])
def test_simplified_variants_never_differentiate_through_two_blocks(name):
    net = fc_net(dtype=torch.float32)
    algo = TargetPropagation(variant(name), net, 1)
    fed_with_graph = record_inputs(net)
    x, y = torch.randn(8, 16), torch.randint(0, 5, (8,))
    algo.train_step(x, y)
    calls = [r for rs in fed_with_graph.values() for r in rs]
    assert calls and not any(calls), "a block's input carried a graph from below"


def test_dtp_uses_one_gradient_step_through_the_top_block_only():
    net = fc_net(dtype=torch.float32)
    algo = TargetPropagation(variant("dtp"), net, 1)
    fed_with_graph = record_inputs(net)
    algo.train_step(torch.randn(8, 16), torch.randint(0, 5, (8,)))
    assert not any(any(v) for i, v in fed_with_graph.items() if i < len(net) - 1)
    assert any(fed_with_graph[len(net) - 1])  # α ∂L/∂h_{L-1} through the output block


def test_fixed_random_feedback_is_never_trained():
    net = fc_net(dtype=torch.float32)
    algo = TargetPropagation(variant("dtp", feedback="fixed_random", first_target="output_gradient"), net, 1)
    before = copy.deepcopy(algo.feedback.state_dict())
    assert "feedback" not in algo.optimizers and algo.parameter_counts()["feedback"] == 0
    algo.train_step(torch.randn(8, 16), torch.randint(0, 5, (8,)))
    for k, v in algo.feedback.state_dict().items():
        assert torch.equal(v, before[k])


def test_per_layer_noise_must_match_the_feedback_layers():
    net = fc_net(dtype=torch.float32)
    with pytest.raises(Exception, match="noise"):
        TargetPropagation(variant("dtp", noise=[0.1, 0.2, 0.3, 0.4]), net, 1)
    algo = TargetPropagation(variant("dtp", noise=[0.1, 0.2]), net, 1)  # blocks 1, 2 have feedback
    assert algo.noise == {1: 0.1, 2: 0.2}


def test_alternating_schedule_trains_feedback_for_a_whole_epoch_first():
    net = fc_net(dtype=torch.float32)
    algo = TargetPropagation(variant("dtp", schedule="alternating"), net, 3)
    batches = [(torch.randn(8, 16), torch.randint(0, 5, (8,))) for _ in range(4)]
    calls = []
    original = algo.train_feedback
    algo.train_feedback = lambda x, y: (calls.append(1), original(x, y))
    algo.before_epoch(0, lambda: iter(batches))
    assert len(calls) == 4
    algo.train_step(*batches[0])
    assert len(calls) == 4, "the alternating schedule trains no feedback during the forward epoch"


# ---------------------------------------------------------------- learning on real data


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["tp", "dtp", "sdtp", "ao_sdtp"])
def test_each_variant_reduces_training_loss_on_fashion_mnist(name, fmnist_subset):
    x, y = fmnist_subset
    torch.manual_seed(0)
    net = build_fc(FCArchConfig(hidden=[128, 128, 128]), (784,), 10)
    algo = TargetPropagation(variant(name, noise=0.1, target_step=0.2), net, 1)
    start, end = loss_before_after(algo, net, x, y, steps=300)
    assert end < start - 0.2, (start, end)
