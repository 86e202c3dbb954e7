"""Networks as explicit sequences of blocks.

A block is one layer of the target-propagation literature, h_l = f_l(h_{l-1}): an optional
reshape, one weight op (Linear, Conv2d, locally connected), the nonlinearity, and optionally a
pooling op and a parameter-free batch normalisation. Algorithms address each block's input,
output and weight op; the blocks issue adds each block's feedback counterpart.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_bias, init_weight  # noqa: F401  (re-exported)
from .lc import LocallyConnected2d, LocallyConnectedTranspose2d


def make_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    factories: dict[str, Callable[[], nn.Module]] = {
        "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "linear": nn.Identity}
    if name not in factories:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(sorted(factories))} "
                         f"or leaky_relu")
    return factories[name]()


def layer_fans(op: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight op seen as a map from its input to its output.

    PyTorch's own computation is right for Linear and Conv2d but reads the wrong dims of a
    ConvTranspose2d weight ``(in, out, k, k)`` and of the 3-D locally connected weights."""
    if isinstance(op, LocallyConnected2d):
        return op.fan_in, op.fan_out
    if isinstance(op, LocallyConnectedTranspose2d):  # the forward layer's fans, swapped
        return op.out_channels * op.kernel_size ** 2, op.in_channels * op.kernel_size ** 2
    if isinstance(op, nn.ConvTranspose2d):
        taps = math.prod(op.kernel_size)
        return op.in_channels * taps, op.out_channels * taps
    return nn.init._calculate_fan_in_and_fan_out(op.weight)


def init_layer(op: nn.Module, scheme: str, gain: float = 1.0) -> None:
    """Initialise a weight op's weight and bias with the right fans for its type, and record the
    scheme as ``op.init_scheme`` (fixed random feedback can then be drawn "like the forward")."""
    if isinstance(op, (LocallyConnected2d, LocallyConnectedTranspose2d)):
        op.reset_parameters(scheme, gain)  # per-position orthogonal and untied biases live there
    elif scheme == "default" and gain == 1.0 and hasattr(op, "reset_parameters"):
        # PyTorch's own default, fans as it computes them (a ConvTranspose2d reads its weight's
        # dim 1), which is what reference code that never re-initialises gets
        op.reset_parameters()
    else:
        fan_in, fan_out = layer_fans(op)
        init_weight(op.weight, scheme, gain, fan_in, fan_out)
        init_bias(op.bias, scheme, fan_in)
    op.init_scheme = (scheme, gain)


def forward_init_scheme(op: nn.Module) -> tuple[str, float]:
    """(scheme, gain) that ``op`` was initialised with; PyTorch's default for an op built by hand."""
    return getattr(op, "init_scheme", ("default", 1.0))


class BatchNormNoAffine(nn.Module):
    """Normalise each feature by its batch mean and std, at train and test time alike
    (FW-DTP's batch-normalised nets: no affine parameters, no running statistics)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    @staticmethod
    def batch_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = [0] + list(range(2, x.dim()))  # per channel for images, per feature for vectors
        return x.mean(dim=dims, keepdim=True), x.var(dim=dims, keepdim=True, unbiased=False)

    def normalise(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return (x - mean) * torch.rsqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(x, *self.batch_statistics(x))


ACTIVATION_TYPES = (nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Identity)
FEEDBACK_PLACEMENTS = ("output", "mirror")


POOL_INDICES = "pool_indices"  # the forward-context key of a block's max-pooling argmax indices


def max_pool_with_indices(pool: nn.MaxPool2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pool(x)`` and its argmax indices (what MaxUnpool needs), whatever ``return_indices`` says."""
    return F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                        ceil_mode=pool.ceil_mode, return_indices=True)


def run_ops_ctx(ops: Iterable[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Apply ``ops`` in order; returns the output and the forward context (see ``Block.forward_ctx``)."""
    ctx: dict = {}
    for op in ops:
        if isinstance(op, nn.MaxPool2d):
            x, ctx[POOL_INDICES] = max_pool_with_indices(op, x)
        else:
            x = op(x)
    return x, ctx


def run_feedback_ops(ops: Iterable[nn.Module], y: torch.Tensor, ctx: dict | None) -> torch.Tensor:
    """Apply feedback ``ops`` in order, handing the forward context to those that need it."""
    for op in ops:
        y = op(y, ctx) if getattr(op, "needs_ctx", False) else op(y)
    return y


def find_weight_op(ops: Iterable[nn.Module]) -> nn.Module:
    """The op that carries a block's (or a feedback block's) weights."""
    for op in ops:
        if isinstance(getattr(op, "weight", None), torch.Tensor):
            return op
    raise AttributeError("no weight op among these ops")


class MaxUnpool(nn.Module):
    """Feedback counterpart of a MaxPool2d: puts each value back where the forward pass found its
    maximum. The indices come from the ``ctx`` of the forward pass being inverted (never from state
    on the module), so several models and several forward passes can share a process."""

    needs_ctx = True

    def __init__(self, pool: nn.MaxPool2d, input_size: tuple[int, int]):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding
        self.output_size = tuple(input_size)  # the pool's input size: floor division loses it

    def forward(self, y: torch.Tensor, ctx: dict | None = None) -> torch.Tensor:
        if not ctx or POOL_INDICES not in ctx:
            raise ValueError("MaxUnpool needs the pooling indices of a forward pass: call the feedback "
                             "block with the ctx returned by Block.forward_ctx (or Network.activations_ctx)")
        return F.max_unpool2d(y, ctx[POOL_INDICES], self.kernel_size, self.stride, self.padding,
                              output_size=self.output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, " \
               f"output_size={self.output_size}"


def _conv_transpose(conv: nn.Conv2d, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                    bias: bool) -> nn.ConvTranspose2d:
    """ConvTranspose2d with the conv's kernel, stride, padding and dilation whose output has the
    conv's *input* size: output_padding restores the rows a strided conv's floor division drops."""
    if isinstance(conv.padding, str) or conv.groups != 1 or conv.padding_mode != "zeros":
        raise NotImplementedError("feedback counterparts need a zero-padded, ungrouped Conv2d with "
                                  "integer padding")
    output_padding = tuple(
        size_in - ((size_out - 1) * s - 2 * p + d * (k - 1) + 1)
        for size_in, size_out, k, s, p, d in zip(in_shape[1:], out_shape[1:], conv.kernel_size,
                                                 conv.stride, conv.padding, conv.dilation))
    return nn.ConvTranspose2d(conv.out_channels, conv.in_channels, conv.kernel_size, conv.stride,
                              conv.padding, output_padding, bias=bias, dilation=conv.dilation)


def mirror_op(op: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
              bias: bool) -> nn.Module:
    """The feedback counterpart of one forward op (maps its output space to its input space).

    ``in_shape``/``out_shape`` are the op's per-sample shapes. New weights are left at their
    constructor's init; ``Block.make_feedback`` re-initialises them.

    Linear(a→b) → Linear(b→a); Conv2d → ConvTranspose2d (same kernel, stride, padding; output size
    = the conv's input size); LocallyConnected2d → LocallyConnectedTranspose2d (sparsity of Wᵀ);
    MaxPool2d → MaxUnpool (indices from the forward ctx); Flatten → Unflatten; ZeroPad2d(p) →
    ZeroPad2d(−p), a crop."""
    if isinstance(op, nn.Linear):
        return nn.Linear(op.out_features, op.in_features, bias=bias)
    if isinstance(op, nn.Conv2d):
        return _conv_transpose(op, in_shape, out_shape, bias)
    if isinstance(op, LocallyConnected2d):
        return LocallyConnectedTranspose2d(op, bias=bias)
    if isinstance(op, nn.MaxPool2d):
        return MaxUnpool(op, in_shape[1:])
    if isinstance(op, nn.Flatten):
        return nn.Unflatten(1, in_shape)
    if isinstance(op, nn.ZeroPad2d):
        return nn.ZeroPad2d(tuple(-p for p in op.padding))
    raise NotImplementedError(f"no feedback counterpart for {op.__class__.__name__}")


class Block(nn.Module):
    """One layer f_l. ``ops`` run in order; exactly one of them carries the layer's weights.

    ``in_shape``/``out_shape`` (per sample) are filled in by ``Network``."""

    def __init__(self, *ops: nn.Module):
        super().__init__()
        if sum(isinstance(op, nn.MaxPool2d) for op in ops) > 1:
            raise ValueError("a block holds at most one MaxPool2d (its ctx has one set of indices)")
        self.ops = nn.Sequential(*ops)
        self.in_shape: tuple[int, ...] = ()
        self.out_shape: tuple[int, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)  # no pooling indices computed: use forward_ctx when feedback needs them

    def forward_ctx(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Forward pass that also returns what the feedback block needs from it: for a block with
        max pooling, ``{POOL_INDICES: argmax indices}``; otherwise ``{}``. The context is returned,
        never stored, so several models (and several passes of one model) can share a process."""
        return run_ops_ctx(self.ops, x)

    @property
    def weight_op(self) -> nn.Module:
        return find_weight_op(self.ops)

    @property
    def activation(self) -> nn.Module:
        """The block's nonlinearity (Identity for a linear block)."""
        for op in self.ops:
            if isinstance(op, ACTIVATION_TYPES):
                return op
        return nn.Identity()

    def op_shapes(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """(in_shape, out_shape) per op, by a dry run on one zero sample."""
        shapes = []
        x = torch.zeros((1, *self.in_shape), dtype=self.weight_op.weight.dtype,
                        device=self.weight_op.weight.device)
        with torch.no_grad():
            for op in self.ops:
                y = op(x)
                shapes.append((tuple(x.shape[1:]), tuple(y.shape[1:])))
                x = y
        return shapes

    def make_feedback(self, placement: str = "output", output_activation: nn.Module | None = None,
                      bias: bool = True, init: str = "xavier_uniform", gain: float = 1.0) -> FeedbackBlock:
        """Build g_l, from this block's output space to its input space, op by op in reverse.

        placement="output" (Lee et al. 2015, Bartunov et al. 2018, FW-DTP): the mirrored weight and
          reshape ops in reverse order, then ``output_activation`` — the nonlinearity of the block
          *below*, so g_l's range is that of h_{l-1}: g_l(h) = σ_{l-1}(V_l h + c_l).
        placement="mirror" (Ernoult et al. 2022's ``invert``): every op mirrored in reverse order, the
          block's own activation included, e.g. Conv→ELU→MaxPool becomes MaxUnpool→ELU→ConvTranspose.

        The rule in one line: g_l's ops are f_l's ops reversed, each replaced by ``mirror_op``;
        activations are kept in place (mirror) or dropped in favour of one ``output_activation`` at
        the end (output); the parameter-free batch normalisation has no counterpart in either.
        Pooling ops become MaxUnpool, so calling g_l needs the ctx of ``forward_ctx``.
        New weights get ``init``/``gain`` with the fans of the feedback op itself (``layer_fans``).
        """
        if placement not in FEEDBACK_PLACEMENTS:
            raise ValueError(f"feedback placement {placement!r}; choose one of {FEEDBACK_PLACEMENTS}")
        ops: list[nn.Module] = []
        for op, (in_shape, out_shape) in reversed(list(zip(self.ops, self.op_shapes()))):
            if isinstance(op, ACTIVATION_TYPES) or isinstance(op, BatchNormNoAffine):
                if placement == "mirror" and isinstance(op, ACTIVATION_TYPES):
                    ops.append(copy.deepcopy(op))
                continue
            mirrored = mirror_op(op, in_shape, out_shape, bias)
            if isinstance(getattr(mirrored, "weight", None), torch.Tensor):
                init_layer(mirrored, init, gain)
            ops.append(mirrored)
        if placement == "output" and output_activation is not None:
            ops.append(output_activation)
        return FeedbackBlock(ops).to(self.weight_op.weight.device, self.weight_op.weight.dtype)


class FeedbackBlock(nn.Module):
    """g_l: maps block l's output space to its input space. ``ctx`` is the forward context of the
    pass whose pooling indices should be used (see ``Block.forward_ctx``)."""

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, y: torch.Tensor, ctx: dict | None = None) -> torch.Tensor:
        return run_feedback_ops(self.ops, y, ctx)

    @property
    def weight_op(self) -> nn.Module:
        return find_weight_op(self.ops)


class Network(nn.Module):
    """A sequence of blocks; ``forward`` gives the logits."""

    def __init__(self, blocks: Iterable[Block], input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        shape = self.input_shape
        with torch.no_grad():  # record each block's per-sample input and output shapes
            for block in self.blocks:
                block.in_shape = shape
                shape = tuple(block(torch.zeros(2, *shape)).shape[1:])
                block.out_shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def activations(self, x: torch.Tensor, detach_inputs: bool = False) -> list[torch.Tensor]:
        """[h_0 = x, h_1, …, h_L]. With ``detach_inputs`` each block sees a detached copy of its
        input, so a loss on h_l only reaches block l's parameters (local learning)."""
        hs = [x]
        for block in self.blocks:
            inp = hs[-1].detach() if detach_inputs else hs[-1]
            hs.append(block(inp))
        return hs

    def activations_ctx(self, x: torch.Tensor, detach_inputs: bool = True) -> tuple[list[torch.Tensor], list[dict]]:
        """Like ``activations`` but also each block's forward context (pooling indices)."""
        hs, ctxs = [x], []
        for block in self.blocks:
            h, ctx = block.forward_ctx(hs[-1].detach() if detach_inputs else hs[-1])
            hs.append(h)
            ctxs.append(ctx)
        return hs, ctxs

    def __len__(self) -> int:
        return len(self.blocks)


def hidden_block(cfg, weight_op: nn.Module, *before: nn.Module, pool: nn.Module | None = None) -> Block:
    """``before`` ops → weight op → activation → ``pool`` → batch norm (if ``cfg.batch_norm``).

    The weight op is initialised here with ``cfg.init``/``cfg.init_gain``. Batch normalisation comes
    last so that it normalises what the next block reads."""
    init_layer(weight_op, cfg.init, cfg.init_gain)
    ops = [*before, weight_op, make_activation(cfg.activation, cfg.negative_slope)]
    ops += [pool] if pool is not None else []
    ops += [BatchNormNoAffine(cfg.batch_norm_eps)] if cfg.batch_norm else []
    return Block(*ops)


def dense_blocks(cfg, feature_shape: tuple[int, ...], hidden: list[int], num_classes: int) -> list[Block]:
    """The fully connected head: flatten (in the first block, when the features are not a vector)
    → Linear+activation per ``hidden`` width → Linear to the classes with ``cfg.output_activation``."""
    widths = [math.prod(feature_shape)] + list(hidden)
    blocks = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        flatten = [nn.Flatten()] if i == 0 and len(feature_shape) > 1 else []
        blocks.append(hidden_block(cfg, nn.Linear(fan_in, fan_out, bias=cfg.bias), *flatten))
    output = nn.Linear(widths[-1], num_classes, bias=cfg.bias)
    init_layer(output, cfg.init, cfg.init_gain)
    flatten = [nn.Flatten()] if not hidden and len(feature_shape) > 1 else []
    blocks.append(Block(*flatten, output, make_activation(cfg.output_activation, cfg.negative_slope)))
    return blocks


def build_fc(cfg, input_shape: tuple[int, ...], num_classes: int) -> Network:
    return Network(dense_blocks(cfg, input_shape, cfg.hidden, num_classes), input_shape, num_classes)


ARCH_BUILDERS: dict[str, Callable[..., Network]] = {"fc": build_fc}  # archs.py adds the others


def build_network(cfg, input_shape: tuple[int, ...], num_classes: int) -> Network:
    from . import archs  # noqa: F401  (registers lc, conv, lenet, vgg; it imports this module)

    if cfg.name not in ARCH_BUILDERS:
        raise ValueError(f"arch {cfg.name!r} has no builder; known: {', '.join(ARCH_BUILDERS)}")
    return ARCH_BUILDERS[cfg.name](cfg, input_shape, num_classes)


def count_parameters(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)
