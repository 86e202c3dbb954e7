"""Architectures (lc, conv, lenet, vgg), their blocks' feedback counterparts, and one training step
of every (algorithm, arch, dataset) combination."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

import dtp_bench.schemas  # noqa: F401  (registers the config schemas)
from dtp_bench.algorithms.base import build_algorithm
from dtp_bench.algorithms.schemas import BPConfig, FeedbackAlignmentConfig
from dtp_bench.config import ConfigError, OptimizerConfig, validate
from dtp_bench.nn.archs import IMAGENET32_STACK, paper_stack
from dtp_bench.nn.blocks import POOL_INDICES, Block, MaxUnpool, build_network, count_parameters, layer_fans
from dtp_bench.nn.lc import LocallyConnected2d, LocallyConnectedTranspose2d
from dtp_bench.nn.schemas import ConvPoolArchConfig, FCArchConfig, LayerStackArchConfig, VGGArchConfig

CONF_DIR = str((Path(__file__).parents[1] / "conf").resolve())
F64 = torch.float64

# (input shape, classes) of mnist/fmnist, cifar10, cifar100, imagenet32
DATASET_SHAPES = {"mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
                  "cifar100": ((3, 32, 32), 100), "imagenet32": ((3, 32, 32), 1000)}
ARCH_SCHEMAS = {"fc": FCArchConfig, "lc": LayerStackArchConfig, "conv": LayerStackArchConfig,
                "lenet": ConvPoolArchConfig, "vgg": VGGArchConfig}


def arch_cfg(name: str, **overrides):
    cfg = ARCH_SCHEMAS[name](name=name, **overrides)
    cfg.validate()
    return cfg


def weight_count(network: nn.Module) -> int:
    return sum(p.numel() for n, p in network.named_parameters() if n.endswith("weight"))


def thin_lc(dataset: str):
    """The paper's LC stack for ``dataset`` (same kernels, strides, depth) at 1/16 of the channels:
    the 50–74M-weight originals take most of a minute per step on two CPU cores, so they run under
    ``-m slow`` only."""
    shape, classes = DATASET_SHAPES[dataset]
    layers, fc_hidden = paper_stack(shape, classes)
    return arch_cfg("lc", layers=[[k, max(c // 16, 2), s] for k, c, s in layers],
                    fc_hidden=[h // 16 for h in fc_hidden])


@pytest.fixture(scope="module")
def networks():
    """One network per (arch, dataset, thin), shared by the three algorithms."""
    cache: dict = {}

    def get(arch: str, dataset: str, thin: bool):
        if (arch, dataset, thin) not in cache:
            torch.manual_seed(0)
            shape, classes = DATASET_SHAPES[dataset]
            cfg = thin_lc(dataset) if thin else arch_cfg(arch)
            cache[arch, dataset, thin] = build_network(cfg, shape, classes)
        return cache[arch, dataset, thin]

    return get


# ---------------------------------------------------------------- shapes and sizes
@pytest.mark.parametrize(("dataset", "weights"), [("mnist", 4.18e6), ("cifar10", 50.0e6)])
def test_bartunov_lc_weight_counts(networks, dataset, weights):
    assert weight_count(networks("lc", dataset, thin=False)) == pytest.approx(weights, rel=0.002)


def test_paper_stack_selection():
    assert paper_stack((1, 28, 28), 10)[0][0] == (3, 32, 2)
    assert paper_stack((3, 32, 32), 100)[0][0] == (5, 64, 2)
    assert paper_stack((3, 32, 32), 1000) == (IMAGENET32_STACK, [])


@pytest.mark.parametrize(("arch", "dataset", "flat"), [
    ("lenet", "mnist", 64 * 7 * 7), ("lenet", "cifar10", 4096), ("vgg", "mnist", 512), ("vgg", "cifar10", 512)])
def test_conv_pool_flatten_size_follows_input(arch, dataset, flat):
    shape, classes = DATASET_SHAPES[dataset]
    net = build_network(arch_cfg(arch), shape, classes)
    head = net.blocks[-1] if arch == "vgg" else net.blocks[-2]
    assert head.in_shape == (net.blocks[-2 if arch == "vgg" else -3].out_shape)
    linear = next(op for op in head.ops if isinstance(op, nn.Linear))
    assert linear.in_features == flat


def test_vgg_pads_28_to_32():
    net = build_network(arch_cfg("vgg"), (1, 28, 28), 10)
    pad = net.blocks[0].ops[0]
    assert isinstance(pad, nn.ZeroPad2d) and pad.padding == (2, 2, 2, 2)
    assert [b.out_shape[-1] for b in net.blocks[:5]] == [16, 8, 4, 2, 1]
    assert not any(isinstance(op, nn.ZeroPad2d) for op in build_network(arch_cfg("vgg"), (3, 32, 32), 10).blocks[0].ops)


def test_conv_has_lc_shapes_with_shared_weights(networks):
    lc, conv = (networks(name, "cifar10", thin=False) for name in ("lc", "conv"))
    assert [b.out_shape for b in lc.blocks] == [b.out_shape for b in conv.blocks]
    assert isinstance(conv.blocks[0].weight_op, nn.Conv2d)
    assert weight_count(conv) < weight_count(lc) / 2


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_conv_is_lc_with_one_kernel_everywhere(dataset):
    # TF "SAME" in both (stride 2: one pixel more padding after than before): an LC layer whose every
    # position holds the conv's kernel computes the conv, so the windows sit at the same offsets
    shape, classes = DATASET_SHAPES[dataset]
    layers = [[k, 3, s] for k, _, s in paper_stack(shape, classes)[0]]
    torch.manual_seed(0)
    conv = build_network(arch_cfg("conv", layers=layers, fc_hidden=[]), shape, classes).double()
    lc = build_network(arch_cfg("lc", layers=layers, fc_hidden=[]), shape, classes).double()
    x = torch.randn(2, *shape, dtype=F64)
    for conv_block, lc_block in zip(conv.blocks[:-1], lc.blocks[:-1]):
        kernel, local = conv_block.weight_op, lc_block.weight_op
        with torch.no_grad():
            local.weight.copy_(kernel.weight.reshape(kernel.out_channels, -1).T.expand_as(local.weight))
            local.bias.copy_(kernel.bias[:, None, None].expand_as(local.bias))
        y = conv_block(x)
        torch.testing.assert_close(y, lc_block(x))
        x = y
    assert any(isinstance(op, nn.ZeroPad2d) for b in conv.blocks for op in b.ops)  # a stride-2 layer


def test_arch_options_are_applied():
    cfg = arch_cfg("lc", layers=[[3, 4, 2]], fc_hidden=[], activation="relu", bias=False, batch_norm=True)
    net = build_network(cfg, (1, 8, 8), 3)
    assert len(net) == 2 and net.blocks[0].weight_op.bias is None
    assert isinstance(net.blocks[0].activation, nn.ReLU)
    assert net.blocks[0].weight_op.init_scheme == ("xavier_uniform", 1.0)


def test_invalid_arch_configs_fail_at_config_time():
    with pytest.raises(ConfigError, match="arch.layers\\[0\\].*odd kernels"):
        arch_cfg("conv", layers=[[4, 8, 2]])
    with pytest.raises(ConfigError, match="kernel, channels, stride"):
        arch_cfg("lc", layers=[[3, 8]])
    with pytest.raises(ConfigError, match="kernel_size"):
        arch_cfg("lenet", kernel_size=4)
    with pytest.raises(ConfigError, match="pool_padding"):
        arch_cfg("vgg", pool_padding=2)


@pytest.mark.parametrize("arch", ["lc", "conv", "lenet", "vgg"])
@pytest.mark.parametrize("algorithm", ["fa", "dfa"])
def test_hydra_composes_every_arch_and_algorithm(arch, algorithm):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"arch={arch}", f"algorithm={algorithm}"])
    typed = validate(cfg)
    assert typed.arch.name == arch and typed.algorithm.name == algorithm


# ---------------------------------------------------------------- feedback counterparts
@pytest.mark.parametrize("arch", ["lc", "conv", "lenet", "vgg"])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_feedback_blocks_map_outputs_to_inputs(networks, arch, dataset):
    shape, _ = DATASET_SHAPES[dataset]
    net = networks(arch, dataset, thin=arch == "lc" and dataset != "mnist")
    hs, ctxs = net.activations_ctx(torch.randn(2, *shape))
    for block, h_in, h_out, ctx in zip(net.blocks, hs, hs[1:], ctxs):
        for placement in ("output", "mirror"):
            back = block.make_feedback(placement, output_activation=nn.Tanh())
            assert back(h_out, ctx).shape == h_in.shape


def _adjoint_check(op: nn.Module, back: nn.Module, in_shape, ctx=None):
    """back with op's weights must be the vector-Jacobian product of op (bias-free)."""
    x = torch.randn(3, *in_shape, dtype=F64, requires_grad=True)
    y = op(x)
    v = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, v)
    torch.testing.assert_close(back(v) if ctx is None else back(v, ctx), expected)


@pytest.mark.parametrize(("size", "kernel", "stride", "padding"), [(28, 3, 2, 1), (7, 3, 2, 1), (8, 5, 1, 2), (9, 3, 3, 0)])
def test_conv_transpose_is_the_adjoint_and_restores_the_size(size, kernel, stride, padding):
    conv = nn.Conv2d(2, 3, kernel, stride, padding, bias=False).to(F64)
    block = Block(conv)
    block.in_shape = (2, size, size)
    back = block.make_feedback("mirror", bias=False).ops[0]
    assert isinstance(back, nn.ConvTranspose2d) and back.kernel_size == conv.kernel_size
    assert back.stride == conv.stride and back.padding == conv.padding
    with torch.no_grad():
        back.weight.copy_(conv.weight)
    _adjoint_check(conv, back, (2, size, size))


def test_lc_mirror_is_the_transposed_lc():
    lc = LocallyConnected2d(2, 3, (7, 7), 3, 2, bias=False).to(F64)
    block = Block(lc)
    block.in_shape = (2, 7, 7)
    back = block.make_feedback("mirror", bias=False).ops[0]
    assert isinstance(back, LocallyConnectedTranspose2d)
    _adjoint_check(lc, back.load_weight_from(lc), (2, 7, 7))


def test_unpool_uses_the_indices_of_the_pass_given():
    pool = nn.MaxPool2d(2, 2)
    block = Block(nn.Conv2d(1, 2, 3, padding=1), nn.ELU(), pool)
    block.in_shape = (1, 8, 8)
    unpool = block.make_feedback("mirror").ops[0]
    assert isinstance(unpool, MaxUnpool)
    x1, x2 = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    (_, ctx1), (_, ctx2) = block.forward_ctx(x1), block.forward_ctx(x2)  # the later pass must not win
    pre = block.ops[1](block.ops[0](x1))
    assert torch.equal(nn.functional.max_pool2d(pre, 2, 2, return_indices=True)[1], ctx1[POOL_INDICES])
    y = torch.randn(2, 2, 4, 4)
    out = unpool(y, ctx1)
    assert out.shape == (2, 2, 8, 8) and torch.count_nonzero(out) == y.numel()
    assert torch.equal(out.flatten(2).gather(2, ctx1[POOL_INDICES].flatten(2)), y.flatten(2))
    assert not torch.equal(unpool(y, ctx2), out)
    with pytest.raises(ValueError, match="forward_ctx"):
        unpool(y)


def test_forward_ctx_matches_forward_and_two_models_do_not_interfere():
    cfg = arch_cfg("lenet")
    torch.manual_seed(0)
    a, b = build_network(cfg, (1, 28, 28), 10), build_network(cfg, (1, 28, 28), 10)
    x = torch.randn(2, 1, 28, 28)
    hs_a, ctx_a = a.activations_ctx(x)
    kept = [c[POOL_INDICES].clone() for c in ctx_a[:2]]  # a copy no later pass can write into
    _, ctx_b = b.activations_ctx(torch.randn(2, 1, 28, 28))
    # b's pass (other weights, other input) found other maxima, and left a's indices as they were
    assert all(not torch.equal(k, c[POOL_INDICES]) for k, c in zip(kept, ctx_b[:2]))
    assert all(torch.equal(k, c[POOL_INDICES]) for k, c in zip(kept, ctx_a[:2]))
    assert torch.equal(hs_a[-1], a(x))
    again, ctx_again = a.activations_ctx(x)
    assert all(torch.equal(k, c[POOL_INDICES]) for k, c in zip(kept, ctx_again[:2]))
    assert ctx_a[2] == {}  # the dense blocks have no pooling


@pytest.mark.parametrize("op", [nn.ConvTranspose2d(4, 6, 3, 2), LocallyConnected2d(4, 6, (8, 8), 3, 2)])
def test_feedback_init_uses_the_feedback_ops_own_fans(op):
    fan_in, fan_out = layer_fans(op)
    assert (fan_in, fan_out) == (4 * 9, 6 * 9)
    conv = nn.Conv2d(6, 4, 3, 2)
    block = Block(conv)
    block.in_shape = (6, 16, 16)
    back = block.make_feedback("mirror", init="kaiming_normal", bias=False).ops[0]
    assert back.weight.std().item() == pytest.approx((2 / (4 * 9)) ** 0.5, rel=0.1)


# ---------------------------------------------------------------- one step everywhere
def _combinations():
    for algorithm in ("bp", "fa", "dfa"):
        for arch in ARCH_SCHEMAS:
            for dataset in DATASET_SHAPES:
                big = arch == "lc" and dataset != "mnist"
                yield pytest.param(algorithm, arch, dataset, big, id=f"{algorithm}-{arch}-{dataset}")
                if big:
                    yield pytest.param(algorithm, arch, dataset, False, marks=pytest.mark.slow,
                                       id=f"{algorithm}-{arch}-{dataset}-full")


@pytest.mark.parametrize(("algorithm", "arch", "dataset", "thin"), list(_combinations()))
def test_one_training_step_everywhere(networks, algorithm, arch, dataset, thin):
    network = networks(arch, dataset, thin)
    optimizer = OptimizerConfig(name="sgd", lr=1e-3)  # stateless: keeps the big nets cheap
    cfg = (BPConfig(optimizer=optimizer) if algorithm == "bp"
           else FeedbackAlignmentConfig(name=algorithm, optimizer=optimizer))
    algo = build_algorithm(cfg, network, epochs=1)
    shape, classes = DATASET_SHAPES[dataset]
    x, y = torch.randn(2, *shape), torch.randint(0, classes, (2,))
    before = copy.deepcopy(network.blocks[0].weight_op.weight.detach())
    loss, logits = algo.train_step(x, y)
    assert logits.shape == (2, classes) and torch.isfinite(loss) and torch.isfinite(logits).all()
    assert torch.isfinite(sum(p.detach().sum() for p in network.parameters()))  # one reduction per tensor
    assert not torch.equal(before, network.blocks[0].weight_op.weight)  # the first layer learns too
    counts = algo.parameter_counts()
    assert counts["forward"] == count_parameters(network.parameters()) and counts["feedback"] == 0
