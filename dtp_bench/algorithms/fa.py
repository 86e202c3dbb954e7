"""Feedback alignment (Lillicrap et al. 2016): backprop with each layer's Wᵀ replaced by a fixed
random matrix B of W's shape.

The forward pass of training runs every block as usual except its weight op, which goes through
an ``autograd.Function`` that computes the same output but sends the error down through B (the
weight gradient stays exact: δ xᵀ). Linear: δ B; Conv2d: the transposed convolution with B;
locally connected: the transposed LC map with B. Evaluation uses the plain network.

The B's are buffers (in ``state_dict``, so checkpoints restore them, and moved by ``.to``), not
parameters: they are never trained and count as "fixed_feedback", not "feedback", parameters.
This module also holds what DFA shares with FA (``FixedFeedbackAlgorithm``).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import Block, forward_init_scheme, init_layer
from ..nn.lc import LocallyConnected2d, locally_connected
from ..nn.stacked import (
    StackedConv2d,
    StackedLinear,
    StackedLocallyConnected2d,
    from_groups,
    stacked_linear_fa,
    to_groups,
)
from .base import Algorithm, register_algorithm


# ---------------------------------------------------------------- fixed random matrices
class FixedMatrices(nn.Module):
    """An indexable list of tensors stored as buffers (``"0"``, ``"1"``, …)."""

    def __init__(self, tensors: list[torch.Tensor]):
        super().__init__()
        for i, tensor in enumerate(tensors):
            self.register_buffer(str(i), tensor)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._buffers[str(i)]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._buffers.values())

    def __len__(self) -> int:
        return len(self._buffers)


def resolve_init(cfg, op: nn.Module) -> tuple[str, float]:
    """(scheme, gain) of a feedback matrix: ``cfg.feedback_init`` ("same_as_forward" = the scheme
    ``op`` was initialised with), gain = the scheme's gain × ``cfg.feedback_init_gain``."""
    scheme, gain = forward_init_scheme(op)
    if cfg.feedback_init != "same_as_forward":
        scheme, gain = cfg.feedback_init, 1.0
    return scheme, gain * cfg.feedback_init_gain


class FixedFeedbackAlgorithm(Algorithm):
    """Backprop-like training with fixed random feedback ``self.feedback`` (FA and DFA)."""

    def __init__(self, cfg, network, epochs, feedback: list[torch.Tensor]):
        super().__init__(cfg, network, epochs)
        self.feedback = FixedMatrices(feedback)
        self.forward_optimizer()

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), "fixed_feedback": sum(b.numel() for b in self.feedback)}


# ---------------------------------------------------------------- FA ops
def _needs(ctx, *indices: int) -> list[bool]:
    return [ctx.needs_input_grad[i] for i in indices]


class LinearFA(torch.autograd.Function):
    """y = x Wᵀ + b; backward: ∂x = δ B (instead of δ W), ∂W = δᵀ x, ∂b = Σ δ."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        need_x, need_w, need_b = _needs(ctx, 0, 1, 2)
        grad_x = grad @ feedback.to(grad.dtype) if need_x else None
        grad_w = grad.flatten(0, -2).mT @ x.to(grad.dtype).flatten(0, -2) if need_w else None
        grad_b = grad.flatten(0, -2).sum(0) if need_b else None
        return grad_x, grad_w, grad_b, None


class Conv2dFA(torch.autograd.Function):
    """Conv2d whose input gradient is the transposed convolution with B; one fused
    ``convolution_backward`` call gives it together with the exact weight and bias gradients
    (those do not depend on the weight, so passing B there is harmless)."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, conv: nn.Conv2d):
        ctx.save_for_backward(x, feedback)
        ctx.conv, ctx.has_bias = conv, bias is not None
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        conv = ctx.conv
        mask = _needs(ctx, 0, 1, 2)
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad, x.to(grad.dtype), feedback.to(grad.dtype), [feedback.shape[0]] if ctx.has_bias else None,
            conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups, mask)
        return grad_x, grad_w, grad_b, None, None


def feedback_aligned(op: nn.Module, x: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
    """``op(x)`` with the error sent back through ``feedback`` instead of ``op.weight``."""
    if isinstance(op, nn.Linear):
        return LinearFA.apply(x, op.weight, op.bias, feedback)
    if isinstance(op, StackedLinear):  # batched runs: B is (K, out, in)
        return stacked_linear_fa(op, x, feedback)
    if isinstance(op, StackedConv2d):  # batched runs: one grouped convolution, group k = run k
        bias = op.bias.flatten() if op.bias is not None else None
        out = Conv2dFA.apply(to_groups(x, op.runs), op.weight.flatten(0, 1), bias, feedback.flatten(0, 1), op)
        return from_groups(out, op.runs)
    if isinstance(op, StackedLocallyConnected2d):
        return op(x, feedback)
    if isinstance(op, nn.Conv2d):
        return Conv2dFA.apply(x, op.weight, op.bias, feedback, op)
    if isinstance(op, LocallyConnected2d):
        return locally_connected(x, op, feedback)  # its backward already takes a feedback matrix
    raise NotImplementedError(f"feedback alignment has no rule for {op.__class__.__name__}")


SUPPORTED_OPS = (nn.Linear, nn.Conv2d, LocallyConnected2d, StackedLinear, StackedConv2d, StackedLocallyConnected2d)


def random_feedback_like(op: nn.Module, scheme: str, gain: float) -> torch.Tensor:
    """A fresh tensor of ``op.weight``'s shape drawn as ``init_layer`` would draw op's weight."""
    twin = copy.deepcopy(op)
    init_layer(twin, scheme, gain)
    return twin.weight.detach().clone()


# ---------------------------------------------------------------- the algorithm
@register_algorithm("fa")
class FeedbackAlignment(FixedFeedbackAlgorithm):
    def __init__(self, cfg, network, epochs):
        for i, block in enumerate(network.blocks):
            if not isinstance(block.weight_op, SUPPORTED_OPS):
                raise NotImplementedError(f"fa: block {i} has a {block.weight_op.__class__.__name__}; "
                                          f"feedback alignment supports Linear, Conv2d and LC layers")
        feedback = [random_feedback_like(block.weight_op, *resolve_init(cfg, block.weight_op))
                    for block in network.blocks]
        super().__init__(cfg, network, epochs, feedback)

    def forward_update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block, feedback in zip(self.network.blocks, self.feedback):
            x = _block_forward_fa(block, x, feedback)
        loss = self.cross_entropy(x, y)
        loss.sum().backward()
        return loss.detach(), x.detach()


def _block_forward_fa(block: Block, x: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
    weight_op = block.weight_op
    for op in block.ops:
        x = feedback_aligned(op, x, feedback) if op is weight_op else op(x)
    return x
