"""Feedback alignment and direct feedback alignment: exactness when the random feedback equals
the forward weights, learning on a small problem, and what is (not) stored as parameters."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dtp_bench.algorithms.base import build_algorithm
from dtp_bench.algorithms.fa import LinearFA, feedback_aligned
from dtp_bench.algorithms.schemas import BPConfig, FeedbackAlignmentConfig
from dtp_bench.config import ConfigError, OptimizerConfig
from dtp_bench.nn.blocks import BatchNormNoAffine, Block, Network, build_network
from dtp_bench.nn.lc import LocallyConnected2d
from dtp_bench.nn.schemas import FCArchConfig, LayerStackArchConfig

F64 = torch.float64
SGD = OptimizerConfig(name="sgd", lr=0.1)


def fa_cfg(name: str = "fa", optimizer: OptimizerConfig = SGD, **kw) -> FeedbackAlignmentConfig:
    cfg = FeedbackAlignmentConfig(name=name, optimizer=optimizer, **kw)
    cfg.validate()
    return cfg


def mixed_network() -> Network:
    """Every weight-op type FA knows, with pooling, a strided LC layer and batch norm."""
    torch.manual_seed(0)
    blocks = [Block(nn.Conv2d(2, 3, 3, padding=1), nn.ELU(), nn.MaxPool2d(3, 2, 1), BatchNormNoAffine()),
              Block(LocallyConnected2d(3, 4, (4, 4), 3, 2), nn.Tanh()),
              Block(nn.Flatten(), nn.Linear(16, 6), nn.Tanh(), BatchNormNoAffine()),
              Block(nn.Linear(6, 5))]
    return Network(blocks, (2, 8, 8), 5).to(F64)


def batch(network: Network, n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *network.input_shape, generator=g, dtype=F64)
    return x, torch.randint(0, network.num_classes, (n,), generator=g)


def one_step(cfg, network: Network, x, y, set_feedback=None) -> Network:
    algo = build_algorithm(cfg, copy.deepcopy(network), epochs=1).to(F64)
    if set_feedback is not None:
        set_feedback(algo)
    algo.train_step(x, y)
    return algo.network


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=name)


# ---------------------------------------------------------------- exactness
def test_fa_with_forward_weights_as_feedback_is_backprop():
    net = mixed_network()
    x, y = batch(net)

    def copy_forward_weights(algo):
        for matrix, block in zip(algo.feedback, algo.network.blocks):
            matrix.copy_(block.weight_op.weight)

    bp = one_step(BPConfig(optimizer=SGD), net, x, y)
    fa = one_step(fa_cfg(), net, x, y, copy_forward_weights)
    random_fa = one_step(fa_cfg(), net, x, y)
    assert_same_parameters(bp, fa)
    # with random feedback only the output layer (which sees the true error) agrees with backprop
    assert torch.equal(random_fa.blocks[-1].weight_op.weight, bp.blocks[-1].weight_op.weight)
    assert not torch.allclose(random_fa.blocks[0].weight_op.weight, bp.blocks[0].weight_op.weight)


@pytest.mark.parametrize("op", [nn.Linear(7, 4), nn.Conv2d(2, 3, 3, 2, 1), LocallyConnected2d(2, 3, (6, 6), 3, 2)])
def test_fa_ops_send_the_error_through_the_feedback_matrix(op):
    op = op.to(F64)
    in_shape = (7,) if isinstance(op, nn.Linear) else (2, 6, 6)
    x = torch.randn(3, *in_shape, dtype=F64, requires_grad=True)
    feedback = torch.randn_like(op.weight)
    out = feedback_aligned(op, x, feedback)
    torch.testing.assert_close(out, op(x))
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, op.weight, op.bias], grad)
    # the same op with B as its weight gives the expected input gradient; W's gradient is exact
    twin = copy.deepcopy(op)
    with torch.no_grad():
        twin.weight.copy_(feedback)
    if isinstance(op, LocallyConnected2d):
        # the LC layer's own backward is the code under test (lc_transpose and the weight gradient):
        # the reference is autograd through the dense matrix of the LC map, built by index
        # arithmetic (to_dense): input gradient δᵀ D_B, weight gradient through D_W
        expected_x = (grad.flatten(1) @ twin.to_dense()).view_as(x)
        dense_out = x.detach().flatten(1) @ op.to_dense().T + op.bias.flatten()
        expected_w, expected_b = torch.autograd.grad(dense_out, [op.weight, op.bias], grad.flatten(1))
    else:  # autograd's own Linear / Conv2d backward
        expected_x = torch.autograd.grad(twin(x), x, grad)[0]
        expected_w, expected_b = torch.autograd.grad(op(x), [op.weight, op.bias], grad)
    torch.testing.assert_close(grads[0], expected_x)
    torch.testing.assert_close(grads[1], expected_w)
    torch.testing.assert_close(grads[2], expected_b)
    assert not torch.allclose(grads[0], torch.autograd.grad(op(x), x, grad)[0])  # B, not W


def test_fa_skips_the_input_gradient_nobody_needs():
    op = nn.Linear(3, 2).to(F64)
    out = LinearFA.apply(torch.randn(4, 3, dtype=F64), op.weight, op.bias, torch.randn(2, 3, dtype=F64))
    out.sum().backward()  # x has no grad: no δB product is formed, and nothing fails
    assert op.weight.grad is not None


def test_dfa_on_one_hidden_layer_with_output_weights_as_feedback_is_backprop():
    torch.manual_seed(0)
    net = Network([Block(nn.Linear(8, 6), nn.Tanh()), Block(nn.Linear(6, 3))], (8,), 3).to(F64)
    x, y = batch(net)

    def output_weights_as_feedback(algo):
        algo.feedback[0].copy_(algo.network.blocks[1].weight_op.weight)  # (n_classes, hidden)

    bp = one_step(BPConfig(optimizer=SGD), net, x, y)
    dfa = one_step(fa_cfg("dfa"), net, x, y, output_weights_as_feedback)
    assert_same_parameters(bp, dfa)


def test_dfa_feedback_is_dense_per_hidden_block_and_output_gets_true_gradient():
    net = mixed_network()
    x, y = batch(net)
    algo = build_algorithm(fa_cfg("dfa"), copy.deepcopy(net), epochs=1).to(F64)
    assert [tuple(m.shape) for m in algo.feedback] == [(5, 3 * 4 * 4), (5, 4 * 2 * 2), (5, 6)]
    algo.train_step(x, y)
    bp = one_step(BPConfig(optimizer=SGD), net, x, y)
    torch.testing.assert_close(algo.network.blocks[-1].weight_op.weight, bp.blocks[-1].weight_op.weight)


# ---------------------------------------------------------------- learning
@pytest.mark.parametrize("name", ["fa", "dfa"])
@pytest.mark.parametrize("arch", ["fc", "lc"])
def test_training_loss_goes_down(name, arch):
    torch.manual_seed(0)
    cfg = (FCArchConfig(hidden=[32, 32]) if arch == "fc"
           else LayerStackArchConfig(name="lc", layers=[[3, 4, 2], [3, 4, 1]], fc_hidden=[32]))
    net = build_network(cfg, (1, 8, 8), 4)
    teacher = torch.randn(64, 4)
    x = torch.randn(128, 1, 8, 8)
    y = (x.flatten(1) @ teacher).argmax(1)
    algo = build_algorithm(fa_cfg(name, OptimizerConfig(name="adam", lr=3e-3)), net, epochs=1)
    losses = [algo.train_step(x, y)[0].item() for _ in range(60)]
    assert losses[-1] < 0.7 * losses[0]


# ---------------------------------------------------------------- bookkeeping and config
def test_feedback_matrices_are_buffers_in_the_state_dict():
    net = mixed_network()
    algo = build_algorithm(fa_cfg(), net, epochs=1)
    state = algo.state_dict()
    assert sum(k.startswith("feedback.") for k in state) == len(net)
    assert not any(p is m for p in algo.parameters() for m in algo.feedback)
    other = build_algorithm(fa_cfg(), copy.deepcopy(net), epochs=1)
    for matrix in other.feedback:
        matrix.zero_()
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(algo.feedback, other.feedback))
    counts = algo.parameter_counts()
    assert counts["feedback"] == 0
    assert counts["fixed_feedback"] == sum(b.weight_op.weight.numel() for b in net.blocks)


@pytest.mark.parametrize(("init", "gain", "std"), [
    ("same_as_forward", 1.0, (2 / (16 + 6000)) ** 0.5),  # the arch's xavier_uniform, W's fans
    ("same_as_forward", 3.0, 3 * (2 / (16 + 6000)) ** 0.5),
    ("kaiming_normal", 1.0, (2 / 16) ** 0.5)])
def test_feedback_init_follows_the_config(init, gain, std):
    torch.manual_seed(0)
    net = build_network(FCArchConfig(hidden=[6000]), (16,), 3)
    algo = build_algorithm(fa_cfg(feedback_init=init, feedback_init_gain=gain), net, epochs=1)
    matrix = algo.feedback[0]
    assert matrix.shape == net.blocks[0].weight_op.weight.shape
    assert matrix.std().item() == pytest.approx(std, rel=0.05)
    assert not torch.equal(matrix, net.blocks[0].weight_op.weight)


def test_bad_feedback_config_is_rejected():
    with pytest.raises(ConfigError, match="feedback_init"):
        fa_cfg(feedback_init="glorot")
    with pytest.raises(ConfigError, match="feedback_init_gain"):
        fa_cfg(feedback_init_gain=0.0)


def test_fa_and_dfa_run_under_bf16_autocast():
    net = build_network(LayerStackArchConfig(name="lc", layers=[[3, 4, 2]], fc_hidden=[8]), (1, 8, 8), 3)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    for name in ("fa", "dfa"):
        algo = build_algorithm(fa_cfg(name), net, epochs=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = algo.train_step(x, y)
        assert torch.isfinite(loss)
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters())


def test_lc_backward_is_exact_to_second_order():
    """The LC layer's hand-written backward (shared with FA) against finite differences."""
    from dtp_bench.nn.lc import _LocallyConnectedMap

    layer = LocallyConnected2d(2, 3, (5, 6), 3, 2).to(F64)
    x = torch.randn(2, 2, 5, 6, dtype=F64, requires_grad=True)
    w, b = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias))

    def fn(x, w, b):
        return _LocallyConnectedMap.apply(x, w, b, w, layer)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
