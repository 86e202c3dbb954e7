"""Networks as explicit sequences of blocks.

A block is one layer of the target-propagation literature, h_l = f_l(h_{l-1}): an optional
reshape, one weight op (Linear, Conv2d, locally connected), the nonlinearity, and optionally a
pooling op and a parameter-free batch normalisation. Algorithms address each block's input,
output and weight op; the blocks issue adds each block's feedback counterpart.
"""
from __future__ import annotations

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


WEIGHT_OPS = (nn.Linear, nn.Conv2d)


class Block(nn.Module):
    """One layer f_l. ``ops`` run in order; exactly one of them carries the layer's weights."""

    def __init__(self, *ops: nn.Module):
        super().__init__()
        self.ops = nn.Sequential(*ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)

    @property
    def weight_op(self) -> nn.Module:
        for op in self.ops:
            if hasattr(op, "weight") and isinstance(op.weight, torch.Tensor):
                return op
        raise AttributeError("block has no weight op")

    @property
    def activation(self) -> nn.Module:
        """The block's nonlinearity (Identity for a linear block)."""
        for op in self.ops:
            if isinstance(op, (nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Identity)):
                return op
        return nn.Identity()


class Network(nn.Module):
    """A sequence of blocks; ``forward`` gives the logits."""

    def __init__(self, blocks: Iterable[Block], input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

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
