"""The target-propagation engine against mathematical facts (tp, dtp, sdtp, ao_sdtp)."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import loss_before_after
from torch import nn

from dtp_bench.algorithms.bp import Backprop
from dtp_bench.algorithms.schemas import AlgorithmConfig, TargetPropConfig
from dtp_bench.algorithms.target_prop import TargetPropagation, squared_error
from dtp_bench.config import OptimizerConfig
from dtp_bench.nn.archs import build_conv_pool
from dtp_bench.nn.blocks import POOL_INDICES, build_fc
from dtp_bench.nn.schemas import ConvPoolArchConfig, FCArchConfig


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


# ---------------------------------------------------------------- propagation rules
class AffineFeedback(nn.Module):
    """A fixed feedback function that inverts nothing: g(u) = A u + c (the context is ignored)."""

    def __init__(self, n_in: int, n_out: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(n_out, n_in, generator=gen, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(n_out, generator=gen, dtype=torch.float64))

    def forward(self, u, ctx=None):
        return u @ self.A.T + self.c


@pytest.mark.parametrize("first_target", ["penultimate_gradient", "label"])
@pytest.mark.parametrize("propagation", ["plain", "difference"])
def test_plain_and_difference_propagation_with_a_fixed_feedback(propagation, first_target):
    """plain (TP): ĥ_i = g_i(ĥ_{i+1}); difference (DTP): ĥ_i = h_i + g_i(ĥ_{i+1}) − g_i(h_{i+1}),
    where g_{L-1} reads softmax(h_L) in place of h_L under the label target."""
    net = fc_net()  # h: 16 → 12 → 10 → 8 → 5
    overrides = dict(propagation=propagation)
    if first_target == "label":
        overrides.update(first_target="label", inverse_loss="denoising")
    algo = TargetPropagation(variant("dtp", **overrides), net, 1)
    x, y = torch.randn(9, 16, dtype=torch.float64), torch.randint(0, 5, (9,))
    with torch.no_grad():
        hs, ctxs = net.activations_ctx(x)
    top = len(net) - 1
    for i in algo.feedback_blocks:
        algo.feedback[str(i)] = AffineFeedback(hs[i + 1].shape[1], hs[i].shape[1], seed=i)
    targets = algo.targets(hs, ctxs, y)
    assert sorted(targets) == list(range(1, algo.first_level + 1))
    for i in algo.feedback_blocks:
        g = algo.feedback[str(i)]
        read = torch.softmax(hs[i + 1], 1) if i == top and first_target == "label" else hs[i + 1]
        with torch.no_grad():
            plain, difference = g(targets[i + 1]), hs[i] + g(targets[i + 1]) - g(read)
        assert (plain - difference).abs().max() > 0.1  # g is no inverse: the two rules differ
        torch.testing.assert_close(targets[i], plain if propagation == "plain" else difference,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("placement", ["output", "mirror"])
def test_difference_propagation_through_max_pooling_uses_each_pass_indices(placement):
    """propagate() runs g once on [ĥ_{i+1}; h_{i+1}] with the pooling indices stacked twice; that
    must equal h_i + g(ĥ_{i+1}, ctx) − g(h_{i+1}, ctx) computed in two calls."""
    torch.manual_seed(0)
    net = build_conv_pool(ConvPoolArchConfig(channels=[4, 6], fc_hidden=[12]), (3, 12, 12), 5).double()
    algo = TargetPropagation(variant("dtp", first_target="output_gradient", feedback_placement=placement), net, 1)
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        hs, ctxs = net.activations_ctx(x)
    assert POOL_INDICES in ctxs[1], "block 1 (conv → pool) must hand its argmax indices to g_1"
    assert algo.feedback_blocks == [1, 2, 3]
    gen = torch.Generator().manual_seed(1)
    for i in algo.feedback_blocks:
        target = hs[i + 1] + 0.5 * torch.randn(hs[i + 1].shape, generator=gen, dtype=torch.float64)
        g = algo.feedback[str(i)]
        with torch.no_grad():
            got = algo.propagate(i, target, hs, ctxs)
            expected = hs[i] + g(target, ctxs[i]) - g(hs[i + 1], ctxs[i])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=f"block {i}")


# ---------------------------------------------------------------- the first target
@pytest.mark.parametrize("first_target", ["output_gradient", "penultimate_gradient"])
def test_summed_first_target_loss_takes_a_batch_size_times_larger_step(first_target):
    net = fc_net()
    batch = 9
    x, y = torch.randn(batch, 16, dtype=torch.float64), torch.randint(0, 5, (batch,))
    with torch.no_grad():
        hs = net.activations(x)
    steps = {}
    for reduction in ("mean", "sum"):
        algo = TargetPropagation(variant("dtp", first_target=first_target, target_step=0.3,
                                         target_loss_reduction=reduction), net, 1)
        steps[reduction] = algo.first_target(hs, y) - hs[algo.first_level]
    assert steps["mean"].abs().max() > 1e-4
    torch.testing.assert_close(steps["sum"], batch * steps["mean"], rtol=1e-10, atol=1e-12)
    if first_target == "output_gradient":  # ∂CE_mean/∂logits = (softmax − onehot)/B
        onehot = nn.functional.one_hot(y, 5).double()
        torch.testing.assert_close(steps["mean"], -0.3 * (torch.softmax(hs[-1], 1) - onehot) / batch,
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["sdtp", "ao_sdtp"])
def test_label_target_variants_feed_the_top_feedback_the_class_distribution(name):
    """SDTP: g_{L-1} reads o = softmax(logits) and the first target is the one-hot label; AO-SDTP:
    it reads [o, z] with z = tanh(A h_{L-1}) fixed random features, and the target is [label, z]
    (z left as it is). Checked in the targets and in the top layer's inverse loss."""
    net = fc_net()  # 5 classes
    algo = TargetPropagation(variant(name, noise=0.3), net, 1).double()
    top = len(net) - 1
    assert algo.feedback_blocks == [1, 2, top] and algo.first_level == top + 1
    x, y = torch.randn(9, 16, dtype=torch.float64), torch.randint(0, 5, (9,))
    with torch.no_grad():
        hs, ctxs = net.activations_ctx(x)

    def code(logits, h_below):  # what g_{L-1} should read, by hand
        probs = torch.softmax(logits, 1)
        return probs if name == "sdtp" else torch.cat([probs, torch.tanh(h_below @ algo.aux.weight.T)], 1)

    onehot = nn.functional.one_hot(y, 5).double()
    expected_target = onehot if name == "sdtp" else torch.cat([onehot, code(hs[-1], hs[-2])[:, 5:]], 1)
    g = algo.feedback[str(top)]
    close = dict(rtol=1e-12, atol=1e-12)  # float64 throughout, the softmax of output_code included
    with torch.no_grad():
        torch.testing.assert_close(algo.lifted(top, hs[-1], hs[-2]), code(hs[-1], hs[-2]), **close)
        targets = algo.targets(hs, ctxs, y)
        torch.testing.assert_close(targets[top + 1], expected_target, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(targets[top], hs[top] + g(expected_target) - g(code(hs[-1], hs[-2])), **close)
    if name == "ao_sdtp":
        assert expected_target.shape == (9, 5 + 32) and expected_target[:, 5:].abs().min() > 0

    algo.feedback_blocks = [top]  # the inverse loss of the top layer only (denoising)
    torch.manual_seed(4)
    loss = algo.inverse_loss(hs)
    torch.manual_seed(4)  # the same noise, by hand
    noisy = hs[top] + 0.3 * torch.randn_like(hs[top])
    with torch.no_grad():
        expected = (g(code(net.blocks[top](noisy), noisy)) - hs[top]).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, expected, **close)


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
def propagated_blocks(algo) -> list[int]:
    """The blocks trained toward targets that came down through feedback: blocks 0 … first_level−2
    (block i−1 produces h_i, whose target ĥ_i is propagated for i in feedback_blocks)."""
    return [i - 1 for i in algo.feedback_blocks]


def loss_against_frozen(algo, x, y, steps: int, frozen_blocks=None) -> tuple[float, float, float]:
    """(start, end, frozen_end): the training loss before and after ``steps`` steps of ``algo``, and
    after the same steps (same initial weights, same batches, same noise seed) of a copy of it whose
    ``frozen_blocks`` (default: those trained on propagated targets) never move. An algorithm whose
    hidden layers learn must end below the copy that only trains the layers above them."""
    frozen_blocks = propagated_blocks(algo) if frozen_blocks is None else frozen_blocks
    assert frozen_blocks, "nothing to freeze"
    frozen = copy.deepcopy(algo)
    frozen.freeze_blocks(frozen_blocks)  # trainer.frozen_blocks' mechanism (tests/test_trainer.py)
    torch.manual_seed(0)
    start, end = loss_before_after(algo, algo.network, x, y, steps=steps)
    torch.manual_seed(0)
    frozen_start, frozen_end = loss_before_after(frozen, frozen.network, x, y, steps=steps)
    assert frozen_start == start
    return start, end, frozen_end


# Measured (300 steps of 64, 128-128-128 tanh, 2048 images; loss at the start 2.247). Baseline: the
# same run with the blocks trained on propagated targets frozen (dtp: blocks 0, 1; its block 2 still
# takes the gradient target α∂L/∂h_3. sdtp, ao_sdtp: every hidden block; the label target sits on
# the logits):      dtp 0.268 vs 0.508,  sdtp 0.356 vs 0.903,  ao_sdtp 0.362 vs 0.903.
MARGIN_BELOW_FROZEN = {"dtp": 0.12, "sdtp": 0.3, "ao_sdtp": 0.3}


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["tp", "dtp", "sdtp", "ao_sdtp"])
def test_each_variant_reduces_training_loss_on_fashion_mnist(name, fmnist_subset):
    x, y = fmnist_subset
    torch.manual_seed(0)
    net = build_fc(FCArchConfig(hidden=[128, 128, 128]), (784,), 10)
    algo = TargetPropagation(variant(name, noise=0.1, target_step=0.2), net, 1)
    if name == "tp":
        # Plain TP cannot beat a frozen baseline here: its hidden updates are ~90° from backprop's
        # (measured at the start: 93° for block 0; the feedback's reconstruction error
        # g(h_{i+1}) − h_i, which plain targets keep, swamps the signal g(ĥ_{i+1}) − g(h_{i+1})),
        # and it ends at 1.78, *above* the 0.90 of training the output block alone (0.51 with the
        # penultimate block trained too; feedback warm-up or other widths did not change that).
        # So this only shows that plain TP trains end to end without blowing up and that its
        # propagated targets reach the hidden weights (block 0 moves); it does NOT show that they
        # help. What plain propagation computes is pinned by
        # test_plain_and_difference_propagation_with_a_fixed_feedback.
        first = net.blocks[0].weight_op.weight.detach().clone()
        torch.manual_seed(0)
        start, end = loss_before_after(algo, net, x, y, steps=300)
        moved = (net.blocks[0].weight_op.weight.detach() - first).norm() / first.norm()
        assert end < start - 0.2, (start, end)  # 2.25 → 1.78 when written
        assert moved > 0.1, moved.item()  # 0.39 when written (0 with the hidden blocks frozen)
        return
    start, end, frozen_end = loss_against_frozen(algo, x, y, steps=300)
    assert end < start - 0.2, (start, end)
    assert end < frozen_end - MARGIN_BELOW_FROZEN[name], (start, end, frozen_end)
