"""fw_dtp and drl: their presets compose, B is never trained, DRL regresses onto the corrupted
activation, and both learn on real data."""
from __future__ import annotations

import copy

import pytest
import torch

from dtp_bench.algorithms.base import build_algorithm
from dtp_bench.algorithms.drl import DifferenceReconstruction
from dtp_bench.config import validate
from dtp_bench.nn.blocks import BatchNormNoAffine, build_network
from conftest import compose, loss_before_after


def composed(*overrides: str):
    return validate(compose(overrides))


def small(cfg, hidden=(32, 32, 32), inputs=(1, 28, 28)):
    cfg.arch.hidden = list(hidden)
    torch.manual_seed(0)
    net = build_network(cfg.arch, inputs, 10)
    return net, build_algorithm(cfg.algorithm, net, 1)


def test_fw_dtp_preset_uses_fixed_uniform_feedback_without_bias():
    cfg = composed("algorithm=fw_dtp")
    assert cfg.arch.bias is False and cfg.arch.init == "orthogonal" and cfg.trainer.batch_size == 256
    net, algo = small(cfg)
    a = cfg.algorithm.feedback_init_gain
    assert a == 0.01
    for g in algo.feedback.values():
        weight = g.weight_op.weight
        assert weight.abs().max() <= a and weight.abs().max() > 0.5 * a
        assert g.weight_op.bias is None
    assert "feedback" not in algo.optimizers
    assert algo.parameter_counts()["feedback"] == 0
    before = copy.deepcopy(algo.feedback.state_dict())
    for _ in range(3):
        algo.train_step(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    for key, value in algo.feedback.state_dict().items():
        assert torch.equal(value, before[key]), f"B changed: {key}"


def test_fw_dtp_batch_norm_variant_normalises_inside_feedback_and_targets():
    cfg = composed("algorithm=fw_dtp", "arch.batch_norm=true", "algorithm.target_batch_norm=true")
    net, algo = small(cfg)
    assert any(isinstance(m, BatchNormNoAffine) for m in algo.feedback["1"].modules())
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    hs, ctxs = net.activations_ctx(x)
    targets = algo.targets(hs, ctxs, y)
    for i in algo.feedback_blocks:  # every propagated target is batch-normalised
        torch.testing.assert_close(targets[i].mean(0), torch.zeros_like(targets[i][0]), atol=1e-5, rtol=0)
    loss, logits = algo.train_step(x, y)
    assert torch.isfinite(loss)


def test_batch_normalised_feedback_sees_target_and_activation_batches_apart():
    # FW-DTP-BN: τ_i = h_i + g̃(τ_{i+1}) − g̃(h_{i+1}), each g̃ normalising over its own batch
    cfg = composed("algorithm=fw_dtp", "arch.batch_norm=true")
    net, algo = small(cfg)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    with torch.no_grad():
        hs, ctxs = net.activations_ctx(x)
        targets = algo.targets(hs, ctxs, y)
        for i in algo.feedback_blocks:
            g = algo.feedback[str(i)]
            by_hand = hs[i] + g(targets[i + 1], ctxs[i]) - g(algo.lifted(i, hs[i + 1], hs[i]), ctxs[i])
            torch.testing.assert_close(targets[i], by_hand)


def test_drl_regresses_onto_the_corrupted_activation():
    cfg = composed("algorithm=drl")
    cfg.algorithm.noise = 0.5
    net, algo = small(cfg)
    assert isinstance(algo, DifferenceReconstruction)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        hs, ctxs = net.activations_ctx(x)
    torch.manual_seed(3)
    loss = algo.feedback_loss(hs, ctxs)

    torch.manual_seed(3)  # the same noise, by hand, for both possible references
    to_noisy, to_clean = 0.0, 0.0
    for i in algo.feedback_blocks:
        noisy = hs[i] + 0.5 * torch.randn_like(hs[i])
        upper = noisy
        with torch.no_grad():
            for k in range(i, algo.first_level):
                upper = net.blocks[k](upper)
            for k in reversed(range(i + 1, algo.first_level)):  # ĥ_k = h_k + g_k(u) − g_k(h_{k+1})
                g = algo.feedback[str(k)]
                upper = hs[k] + g(upper) - g(hs[k + 1])
            g = algo.feedback[str(i)]
            rec = hs[i] + g(upper) - g(hs[i + 1])
        to_noisy += (rec - noisy).pow(2).mean() / 0.25
        to_clean += (rec - hs[i]).pow(2).mean() / 0.25
    torch.testing.assert_close(loss, to_noisy)
    assert not torch.allclose(loss, to_clean)


def test_drl_gradient_reaches_only_the_layer_being_reconstructed():
    cfg = composed("algorithm=drl")
    net, algo = small(cfg)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        hs, ctxs = net.activations_ctx(x)
    i = algo.feedback_blocks[0]
    algo.feedback_blocks = [i]  # the loss of one layer only
    algo.feedback_loss(hs, ctxs).backward()
    for j, g in algo.feedback.items():
        has_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
        assert has_grad == (int(j) == i), j
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.realdata
@pytest.mark.parametrize("name,overrides", [
    ("fw_dtp", ["algorithm.optimizer.lr=0.1", "algorithm.target_step=0.5"]),
    ("drl", ["algorithm.optimizer.lr=1e-4"]),
])
def test_learns_on_fashion_mnist(name, overrides, fmnist_subset):
    x, y = fmnist_subset
    cfg = composed(f"algorithm={name}", *overrides)
    net, algo = small(cfg, hidden=(128, 128, 128), inputs=(784,))
    start, end = loss_before_after(algo, net, x, y, steps=300)
    assert end < start - 0.2, (start, end)
