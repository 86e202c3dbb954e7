"""K runs of one network as one model: the run axis folded into the batch axis.

A batch of K runs is laid out run-major, ``(K·B, …)``: rows ``[k·B, (k+1)·B)`` belong to run k.
Everything that treats samples one by one (activations, reshapes, softmax over classes, argmax
over dim 1) is then unchanged; only what mixes samples or holds weights needs the run axis:

* ``StackedLinear``: K weight matrices ``(K, out, in)`` applied with one batched matmul;
* ``StackedConv2d`` / ``StackedConvTranspose2d``: K kernels as one grouped convolution (the runs
  moved into the channel axis, group k = run k);
* ``StackedLocallyConnected2d`` / ``…Transpose2d``: the K runs' positions as one batched product;
* ``StackedBatchNorm``: batch statistics per run, never across runs;
* losses: reduced per run (``per_run_sum`` / ``per_run_mean``), one value per run, so the
  gradient of their sum with respect to run k's weights is run k's own gradient;
* concatenations of two batches (``cat_runs`` / ``split_runs``) keep each run's rows together.

With K = 1 none of these are used: a single run runs the plain modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BatchNormNoAffine


def by_run(t: torch.Tensor, runs: int) -> torch.Tensor:
    """``(K·B, …)`` → ``(K, B, …)`` (a view)."""
    return t.unflatten(0, (runs, -1))


def per_run_sum(t: torch.Tensor, runs: int) -> torch.Tensor:
    """Σ over each run's elements: a scalar for one run, ``(K,)`` for K."""
    return t.sum() if runs == 1 else by_run(t, runs).flatten(1).sum(1)


def per_run_mean(t: torch.Tensor, runs: int) -> torch.Tensor:
    """Mean over each run's elements: a scalar for one run, ``(K,)`` for K."""
    return t.mean() if runs == 1 else by_run(t, runs).flatten(1).mean(1)


def cat_runs(tensors: list[torch.Tensor], runs: int) -> torch.Tensor:
    """Concatenate batches along the batch axis, run by run: run k's rows of every tensor stay in
    run k's block (what ``torch.cat`` does for one run)."""
    if runs == 1:
        return torch.cat(tensors)
    return torch.cat([by_run(t, runs) for t in tensors], dim=1).flatten(0, 1)


def split_runs(t: torch.Tensor, runs: int, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo ``cat_runs`` of two tensors whose first had ``first`` rows (all runs together)."""
    if runs == 1:
        return t[:first], t[first:]
    per_run = by_run(t, runs)
    head = first // runs
    return per_run[:, :head].flatten(0, 1), per_run[:, head:].flatten(0, 1)


class _StackedLayer(nn.Module):
    """K layers of one type and shape as one module: ``weight`` and ``bias`` are theirs stacked
    along a leading run axis (``weight[k]`` is run k's, exactly as its single run holds it); the
    attributes named in ``copied`` (the geometry) and the init scheme are the first layer's."""

    copied: tuple[str, ...] = ()

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        first = layers[0]
        self.runs = len(layers)
        for name in self.copied:
            setattr(self, name, getattr(first, name))
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]),
                                   requires_grad=first.weight.requires_grad)
        self.bias = (nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]),
                                  requires_grad=first.bias.requires_grad) if first.bias is not None else None)
        if hasattr(first, "init_scheme"):
            self.init_scheme = first.init_scheme


class StackedLinear(_StackedLayer):
    """K ``nn.Linear`` of one shape: ``weight`` is ``(K, out, in)``, ``bias`` ``(K, out)``."""

    copied = ("in_features", "out_features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = by_run(x, self.runs)
        if self.bias is None:
            return torch.bmm(xs, self.weight.mT).flatten(0, 1)
        return torch.baddbmm(self.bias.unsqueeze(1), xs, self.weight.mT).flatten(0, 1)

    def product(self, u: torch.Tensor) -> torch.Tensor:
        """W·u without the bias."""
        return torch.bmm(by_run(u, self.runs), self.weight.mT).flatten(0, 1)

    def weight_grad(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """∂⟨c, W·u⟩/∂W for every run: ``(K, out, in)``."""
        return by_run(c, self.runs).mT @ by_run(u, self.runs)

    def extra_repr(self) -> str:
        return f"runs={self.runs}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class StackedBatchNorm(BatchNormNoAffine):
    """``BatchNormNoAffine`` with each run normalised by its own batch statistics."""

    def __init__(self, eps: float, runs: int):
        super().__init__(eps)
        self.runs = runs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = by_run(x, self.runs)
        dims = [1] + list(range(3, xs.dim()))  # per run, per channel (images) or per feature
        mean, var = xs.mean(dim=dims, keepdim=True), xs.var(dim=dims, keepdim=True, unbiased=False)
        return self.normalise(xs, mean, var).flatten(0, 1)


class LinearFAStacked(torch.autograd.Function):
    """Feedback alignment through a ``StackedLinear``: ∂x = δ B per run (B: ``(K, out, in)``),
    ∂W = δᵀ x and ∂b = Σ δ per run."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, runs):
        ctx.save_for_backward(x, feedback)
        ctx.runs = runs
        xs = by_run(x, runs)
        out = torch.bmm(xs, weight.mT) if bias is None else torch.baddbmm(bias.unsqueeze(1), xs, weight.mT)
        return out.flatten(0, 1)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        runs = ctx.runs
        g = by_run(grad, runs)
        grad_x = torch.bmm(g, feedback.to(grad.dtype)).flatten(0, 1) if ctx.needs_input_grad[0] else None
        grad_w = g.mT @ by_run(x.to(grad.dtype), runs) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def stacked_linear_fa(op: StackedLinear, x: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
    return LinearFAStacked.apply(x, op.weight, op.bias, feedback, op.runs)


# ---------------------------------------------------------------- convolutions as grouped ones
def to_groups(x: torch.Tensor, runs: int) -> torch.Tensor:
    """``(K·B, C, H, W)`` → ``(B, K·C, H, W)``: run k's channels become group k."""
    xs = by_run(x, runs)
    return xs.transpose(0, 1).reshape(xs.shape[1], runs * xs.shape[2], *xs.shape[3:])


def from_groups(y: torch.Tensor, runs: int) -> torch.Tensor:
    """``(B, K·C, H, W)`` → ``(K·B, C, H, W)``."""
    ys = y.unflatten(1, (runs, -1))
    return ys.transpose(0, 1).reshape(runs * ys.shape[0], *ys.shape[2:])


class _StackedConv(_StackedLayer):
    """What the stacked convolutions share: K ungrouped kernels of one shape, applied as one
    convolution with ``groups = K``."""

    transposed = False
    copied = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "output_padding",
              "padding_mode")

    def __init__(self, convs: list[nn.Module]):
        first = convs[0]
        if first.groups != 1 or first.padding_mode != "zeros" or isinstance(first.padding, str):
            raise NotImplementedError("batched runs need zero-padded, ungrouped convolutions with integer padding")
        super().__init__(convs)
        self.groups = self.runs  # the grouped convolution that runs all K at once

    def _apply_grouped(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.flatten() if self.bias is not None else None
        return from_groups(self._apply_grouped(to_groups(x, self.runs), self.weight.flatten(0, 1), bias), self.runs)

    def product(self, u: torch.Tensor) -> torch.Tensor:
        """W·u without the bias."""
        return from_groups(self._apply_grouped(to_groups(u, self.runs), self.weight.flatten(0, 1), None), self.runs)

    def weight_grad(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """∂⟨c, W·u⟩/∂W for every run: the shape of ``weight``."""
        grad = torch.ops.aten.convolution_backward(
            to_groups(c, self.runs), to_groups(u, self.runs), self.weight.flatten(0, 1), None, self.stride,
            self.padding, self.dilation, self.transposed, self.output_padding if self.transposed else [0, 0],
            self.groups, [False, True, False])[1]
        return grad.view_as(self.weight)

    def extra_repr(self) -> str:
        return f"runs={self.runs}, {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}"


class StackedConv2d(_StackedConv):
    """K ``nn.Conv2d``: ``weight`` ``(K, out, in, kh, kw)``."""

    def _apply_grouped(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class StackedConvTranspose2d(_StackedConv):
    """K ``nn.ConvTranspose2d``: ``weight`` ``(K, in, out, kh, kw)``."""

    transposed = True

    def _apply_grouped(self, x, weight, bias):
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, self.output_padding, self.groups,
                                  self.dilation)


# ---------------------------------------------------------------- locally connected layers
def _lc_columns(layer, x: torch.Tensor, runs: int) -> torch.Tensor:
    """Every run's patches, ``(K·L, B, C·k·k)``: run k's positions are the k-th block of L rows."""
    cols = F.unfold(F.pad(x, layer.padding), layer.kernel_size, stride=layer.stride)  # (K·B, Ckk, L)
    cols = cols.unflatten(0, (runs, -1)).permute(0, 3, 1, 2)  # (K, L, B, Ckk)
    return cols.reshape(-1, cols.shape[2], cols.shape[3])


def _from_positions(out: torch.Tensor, runs: int, size: tuple[int, int]) -> torch.Tensor:
    """``(K·L, B, X)`` → ``(K·B, X, H, W)``."""
    out = out.unflatten(0, (runs, -1)).permute(0, 2, 3, 1)  # (K, B, X, L)
    return out.reshape(-1, out.shape[2], *size)


def _to_positions(t: torch.Tensor, runs: int) -> torch.Tensor:
    """``(K·B, X, H, W)`` → ``(K·L, B, X)``."""
    t = t.flatten(2).unflatten(0, (runs, -1)).permute(0, 3, 1, 2)  # (K, L, B, X)
    return t.reshape(-1, t.shape[2], t.shape[3])


def _per_run_bias(out: torch.Tensor, bias: torch.Tensor | None, runs: int) -> torch.Tensor:
    if bias is None:
        return out
    return (by_run(out, runs) + bias.unsqueeze(1)).flatten(0, 1)


def _lc_transpose_stacked(layer, y: torch.Tensor, weight: torch.Tensor, runs: int) -> torch.Tensor:
    """The adjoint of the bias-free stacked LC map: ``(K·B, O, H_out, W_out)`` → ``(K·B, C, H, W)``."""
    left, right, top, bottom = layer.padding
    height, width = layer.in_size
    cols = torch.bmm(_to_positions(y, runs), weight.flatten(0, 1).mT)  # (K·L, B, Ckk)
    cols = cols.unflatten(0, (runs, -1)).permute(0, 2, 3, 1).flatten(0, 1)  # (K·B, Ckk, L)
    x = F.fold(cols, (height + top + bottom, width + left + right), layer.kernel_size, stride=layer.stride)
    return x[:, :, top:top + height, left:left + width]


class _StackedLCMap(torch.autograd.Function):
    """The stacked LC map; the input gradient goes through ``feedback`` (the weight for backprop,
    fixed matrices of its shape for feedback alignment), as ``_LocallyConnectedMap`` does."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, layer):
        ctx.save_for_backward(x, feedback)
        ctx.layer = layer
        out = _from_positions(torch.bmm(_lc_columns(layer, x, layer.runs), weight.flatten(0, 1)), layer.runs,
                              layer.out_size)
        return _per_run_bias(out, bias, layer.runs)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        layer, runs = ctx.layer, ctx.layer.runs
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = _lc_transpose_stacked(layer, grad, feedback.to(grad.dtype), runs) if need_x else None
        grad_w = None
        if need_w:
            cols = _lc_columns(layer, x, runs).to(grad.dtype)
            grad_w = torch.bmm(cols.mT, _to_positions(grad, runs)).view_as(feedback)
        grad_b = by_run(grad, runs).sum(1) if need_b else None
        return grad_x, grad_w, grad_b, None, None


_LC_GEOMETRY = ("in_channels", "out_channels", "in_size", "out_size", "kernel_size", "stride", "padding")


class StackedLocallyConnected2d(_StackedLayer):
    """K ``LocallyConnected2d``: ``weight`` ``(K, L, C·k·k, O)``, bias ``(K, O, H_out, W_out)``; all runs'
    positions in one batched product."""

    copied = (*_LC_GEOMETRY, "init", "gain", "fan_in", "fan_out")

    def forward(self, x: torch.Tensor, feedback: torch.Tensor | None = None) -> torch.Tensor:
        return _StackedLCMap.apply(x, self.weight, self.bias, self.weight if feedback is None else feedback, self)


class StackedLocallyConnectedTranspose2d(_StackedLayer):
    """K ``LocallyConnectedTranspose2d`` (the feedback counterpart), stacked like the forward layer."""

    copied = _LC_GEOMETRY

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return _per_run_bias(_lc_transpose_stacked(self, y, self.weight, self.runs), self.bias, self.runs)
