"""Networks as explicit sequences of blocks.

A block is one layer of the target-propagation literature, h_l = f_l(h_{l-1}): an optional
reshape, one weight op (Linear, Conv2d, locally connected), the nonlinearity, and optionally a
pooling op and a parameter-free batch normalisation. Algorithms address each block's input,
output and weight op; the blocks issue adds each block's feedback counterpart.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Optional

import torch
from torch import nn


def make_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    factories: dict[str, Callable[[], nn.Module]] = {
        "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "linear": nn.Identity}
    if name not in factories:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(sorted(factories))} "
                         f"or leaky_relu")
    return factories[name]()


def init_weight(weight: torch.Tensor, scheme: str, gain: float = 1.0,
                fan_in: Optional[int] = None, fan_out: Optional[int] = None) -> None:
    """Initialise a Linear (out, in) or Conv (out, in, k, k) weight in place.

    ``fan_in``/``fan_out`` override PyTorch's fan computation (needed for shapes where it is wrong).
    """
    if fan_in is None or fan_out is None:
        fan_in_, fan_out_ = nn.init._calculate_fan_in_and_fan_out(weight)
        fan_in, fan_out = fan_in or fan_in_, fan_out or fan_out_
    with torch.no_grad():
        if scheme == "xavier_uniform":
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
            weight.uniform_(-bound, bound)
        elif scheme == "xavier_normal":
            weight.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
        elif scheme == "orthogonal":
            nn.init.orthogonal_(weight, gain=gain)
        elif scheme == "kaiming_uniform":
            bound = gain * math.sqrt(6.0 / fan_in)
            weight.uniform_(-bound, bound)
        elif scheme == "kaiming_normal":
            weight.normal_(0.0, gain * math.sqrt(2.0 / fan_in))
        elif scheme == "default":  # PyTorch's Linear/Conv default: U(±1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            weight.uniform_(-bound, bound)
        else:
            raise ValueError(f"unknown init {scheme!r}")


def init_bias(bias: Optional[torch.Tensor], scheme: str, fan_in: int) -> None:
    if bias is None:
        return
    with torch.no_grad():
        if scheme == "default":
            bound = 1.0 / math.sqrt(fan_in)
            bias.uniform_(-bound, bound)
        else:
            bias.zero_()


class BatchNormNoAffine(nn.Module):
    """Normalise each feature by its batch mean and std, at train and test time alike
    (FW-DTP's batch-normalised nets: no affine parameters, no running statistics)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))  # per channel for images, per feature for vectors
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps)


ACTIVATION_TYPES = (nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Identity)
FEEDBACK_PLACEMENTS = ("output", "mirror")


def mirror_op(op: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
              bias: bool) -> nn.Module:
    """The feedback counterpart of one forward op (maps its output space to its input space).

    ``in_shape``/``out_shape`` are the op's per-sample shapes. New weights are left at PyTorch's
    default init; ``Block.make_feedback`` re-initialises them."""
    if isinstance(op, nn.Linear):
        return nn.Linear(op.out_features, op.in_features, bias=bias)
    if isinstance(op, nn.Flatten):
        return nn.Unflatten(1, in_shape)
    raise NotImplementedError(f"no feedback counterpart for {op.__class__.__name__}")


class Block(nn.Module):
    """One layer f_l. ``ops`` run in order; exactly one of them carries the layer's weights.

    ``in_shape``/``out_shape`` (per sample) are filled in by ``Network``."""

    def __init__(self, *ops: nn.Module):
        super().__init__()
        self.ops = nn.Sequential(*ops)
        self.in_shape: tuple[int, ...] = ()
        self.out_shape: tuple[int, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)

    def forward_ctx(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Forward pass that also returns what the feedback block needs from it (pooling indices).
        The context is returned, never stored, so several models can share a process."""
        return self.ops(x), {}

    @property
    def weight_op(self) -> nn.Module:
        for op in self.ops:
            if isinstance(getattr(op, "weight", None), torch.Tensor):
                return op
        raise AttributeError("block has no weight op")

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

    def make_feedback(self, placement: str = "output", output_activation: Optional[nn.Module] = None,
                      bias: bool = True, init: str = "xavier_uniform", gain: float = 1.0) -> "FeedbackBlock":
        """Build g_l, from this block's output space to its input space, op by op in reverse.

        placement="output" (Lee et al. 2015, Bartunov et al. 2018, FW-DTP): the mirrored weight and
          reshape ops in reverse order, then ``output_activation`` — the nonlinearity of the block
          *below*, so g_l's range is that of h_{l-1}: g_l(h) = σ_{l-1}(V_l h + c_l).
        placement="mirror" (Ernoult et al. 2022's ``invert``): every op mirrored in reverse order, the
          block's own activation included, e.g. Conv→ELU→MaxPool becomes MaxUnpool→ELU→ConvTranspose.
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
            weight = getattr(mirrored, "weight", None)
            if isinstance(weight, torch.Tensor):
                init_weight(weight, init, gain)
                init_bias(getattr(mirrored, "bias", None), init, _fan_in(mirrored))
            ops.append(mirrored)
        if placement == "output" and output_activation is not None:
            ops.append(output_activation)
        return FeedbackBlock(ops).to(self.weight_op.weight.device, self.weight_op.weight.dtype)


def _fan_in(op: nn.Module) -> int:
    return nn.init._calculate_fan_in_and_fan_out(op.weight)[0] if op.weight.dim() >= 2 else op.weight.numel()


class FeedbackBlock(nn.Module):
    """g_l: maps block l's output space to its input space. ``ctx`` is the forward context of the
    pass whose pooling indices should be used (see ``Block.forward_ctx``)."""

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, y: torch.Tensor, ctx: Optional[dict] = None) -> torch.Tensor:
        for op in self.ops:
            y = op(y, ctx) if getattr(op, "needs_ctx", False) else op(y)
        return y

    @property
    def weight_op(self) -> nn.Module:
        for op in self.ops:
            if isinstance(getattr(op, "weight", None), torch.Tensor):
                return op
        raise AttributeError("feedback block has no weight op")


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


def build_fc(cfg, input_shape: tuple[int, ...], num_classes: int) -> Network:
    widths = [math.prod(input_shape)] + list(cfg.hidden) + [num_classes]
    blocks = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        is_output = i == len(widths) - 2
        linear = nn.Linear(fan_in, fan_out, bias=cfg.bias)
        init_weight(linear.weight, cfg.init, cfg.init_gain)
        init_bias(linear.bias, cfg.init, fan_in)
        ops: list[nn.Module] = [nn.Flatten()] if i == 0 and len(input_shape) > 1 else []
        ops += [linear, make_activation(cfg.output_activation if is_output else cfg.activation,
                                        cfg.negative_slope)]
        if cfg.batch_norm and not is_output:
            ops.append(BatchNormNoAffine())
        blocks.append(Block(*ops))
    return Network(blocks, input_shape, num_classes)


ARCH_BUILDERS: dict[str, Callable[..., Network]] = {"fc": build_fc}


def build_network(cfg, input_shape: tuple[int, ...], num_classes: int) -> Network:
    if cfg.name not in ARCH_BUILDERS:
        raise ValueError(f"arch {cfg.name!r} has no builder; known: {', '.join(ARCH_BUILDERS)}")
    return ARCH_BUILDERS[cfg.name](cfg, input_shape, num_classes)


def count_parameters(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)
