"""Weight initialisation with explicit fans, shared by dense, convolutional and locally connected
weights (PyTorch's ``nn.init`` reads fans from tensor dims, which is wrong for 3-D LC weights and
for ConvTranspose2d)."""
from __future__ import annotations

import math

import torch
from torch import nn


def init_weight(weight: torch.Tensor, scheme: str, gain: float = 1.0,
                fan_in: int | None = None, fan_out: int | None = None) -> None:
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
        elif scheme == "uniform":  # U(−a, a) with a = gain: FW-DTP's fixed feedback B
            weight.uniform_(-gain, gain)
        elif scheme == "default":  # PyTorch's Linear/Conv default: U(±1/sqrt(fan_in))
            bound = gain / math.sqrt(fan_in)
            weight.uniform_(-bound, bound)
        else:
            raise ValueError(f"unknown init {scheme!r}")


def init_bias(bias: torch.Tensor | None, scheme: str, fan_in: int) -> None:
    if bias is None:
        return
    with torch.no_grad():
        if scheme == "default":
            bound = 1.0 / math.sqrt(fan_in)
            bias.uniform_(-bound, bound)
        else:
            bias.zero_()
