"""Locally connected 2-D layers (convolution without weight sharing).

Every output position ``l`` owns its own filter bank ``weight[l]`` of shape
``(C*k*k, O)``. The forward pass is one ``F.unfold`` (im2col) followed by one
batched matrix product over positions, so there are no Python loops over space.

Padding
-------
All layers use TensorFlow "SAME" padding for every stride (see
:func:`same_padding`): the output size is ``ceil(size / stride)`` and the total
padding needed to get there is split with the smaller half before and the
larger half after. For stride 1 and an odd kernel this is the usual symmetric
"same" padding; for stride 2 (and e.g. an even input with an odd kernel) the
extra pixel goes to the bottom/right, exactly as in TensorFlow, which is the
framework Bartunov et al. (2018) used for their locally connected networks.

Layouts
-------
* ``weight``: ``(L, C*k*k, O)`` with ``L = H_out*W_out`` in row-major order and
  the middle axis ordered ``(c, i, j)`` like ``F.unfold``'s channel axis.
* forward bias: untied, ``(O, H_out, W_out)``.
* transpose bias: untied, ``(C, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .init import init_weight

__all__ = [
    "INITS",
    "LocallyConnected2d",
    "LocallyConnectedTranspose2d",
    "lc_apply",
    "lc_transpose",
    "locally_connected",
    "position_major",
    "same_padding",
]

INITS = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal", "uniform",
         "default")

Padding4 = tuple[int, int, int, int]


def _out_size(size: int, stride: int) -> int:
    return -(-size // stride)  # ceil(size / stride), the "SAME" output size


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding ``(before, after)`` along one spatial axis."""
    if size < 1 or kernel < 1 or stride < 1:
        raise ValueError(f"size, kernel and stride must be >= 1, got {size}, {kernel}, {stride}")
    total = max((_out_size(size, stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _init_weight_(
    weight: Tensor, fan_in: int, fan_out: int, init: str, gain: float
) -> float | None:
    """Initialise an ``(L, rows, cols)`` LC weight in place.

    Returns the bias bound for schemes with a non-zero bias init, else ``None``.
    ``nn.init.xavier_uniform_`` & co. are not used: they would read the fans
    from dims 0/1 of this 3-D tensor (``L`` and ``C*k*k``), which is wrong
    here, so the fans are passed in explicitly.
    """
    if init == "orthogonal":
        with torch.no_grad():
            _orthogonal_per_position_(weight, gain)
        return None
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {list(INITS)}")
    init_weight(weight, init, gain, fan_in, fan_out)
    # Conv2d's default bias: U(±1/sqrt(fan_in)); every other scheme starts biases at zero
    return 1.0 / math.sqrt(fan_in) if init == "default" else None


def _init_bias_(bias: Tensor | None, bound: float | None) -> None:
    """Zero ``bias``, or draw it from U(-bound, bound) when a bound is given."""
    if bias is None:
        return
    with torch.no_grad():
        if bound is None:
            bias.zero_()
        else:
            bias.uniform_(-bound, bound)


def _orthogonal_per_position_(weight: Tensor, gain: float) -> None:
    """Make every ``weight[l]`` a (semi-)orthogonal matrix scaled by ``gain``."""
    n, rows, cols = weight.shape
    # QR is unavailable for half types, so factorise in >= float32.
    dtype = torch.promote_types(weight.dtype, torch.float32)
    a = torch.randn(n, max(rows, cols), min(rows, cols), device=weight.device, dtype=dtype)
    q, r = torch.linalg.qr(a)
    # Sign fix makes Q Haar-distributed instead of biased by the QR convention.
    q = q * torch.diagonal(r, dim1=-2, dim2=-1).sign().unsqueeze(-2)
    if rows < cols:
        q = q.transpose(-2, -1)
    weight.copy_(gain * q)


def lc_transpose(
    y: Tensor,
    weight: Tensor,
    in_channels: int,
    in_size: tuple[int, int],
    kernel_size: int,
    stride: int,
    padding: Padding4,
) -> Tensor:
    """Apply the transpose (adjoint) of the bias-free LC map to ``y``.

    ``y`` is ``(N, O, H_out, W_out)`` and the result ``(N, C, H, W)``; this is
    the vector-Jacobian product of the forward op with respect to its input.
    """
    left, right, top, bottom = padding
    height, width = in_size
    if weight.shape[1] != in_channels * kernel_size**2:
        raise ValueError(
            f"weight has {weight.shape[1]} rows per position, expected "
            f"in_channels*k*k = {in_channels * kernel_size**2}"
        )
    cols = torch.bmm(position_major(y.flatten(2)), weight.mT).permute(1, 2, 0)  # (N, C*k*k, L)
    # fold sums overlapping patches, i.e. it is the adjoint of unfold.
    x = F.fold(
        cols,
        (height + top + bottom, width + left + right),
        kernel_size,
        stride=stride,
    )
    return x[:, :, top : top + height, left : left + width]


def position_major(t: Tensor) -> Tensor:
    """``(N, X, L)`` → contiguous ``(L, N, X)``: the layout in which the per-position products are
    one ``bmm``. (``einsum`` picks strided paths for these shapes that are 2–10× slower on CPU.)"""
    return t.permute(2, 0, 1).contiguous()


def lc_apply(cols: Tensor, weight: Tensor, bias: Tensor | None, out_size: tuple[int, int]) -> Tensor:
    """The LC map on position-major patches ``cols`` (see :meth:`LocallyConnected2d.columns`)."""
    out = torch.bmm(cols, weight).permute(1, 2, 0).unflatten(2, out_size)
    return out if bias is None else out + bias


class _LocallyConnectedMap(torch.autograd.Function):
    """The LC map with a hand-written backward whose input gradient goes through ``feedback``.

    Autograd's own backward of ``bmm`` on the permuted output falls back to per-position copies
    (2–4× slower); here the output gradient is made position-major once. ``feedback`` is the weight
    itself for backprop, or a fixed matrix of its shape for feedback alignment. The backward
    unfolds the saved input again (k² times smaller than its patches) with differentiable ops, so
    double backward works too."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, layer):
        ctx.save_for_backward(x, feedback)
        ctx.layer = layer
        return lc_apply(layer.columns(x), weight, bias, layer.out_size)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        layer = ctx.layer
        cols = layer.columns(x)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = lc_transpose(grad, feedback.to(grad.dtype), layer.in_channels, layer.in_size,
                              layer.kernel_size, layer.stride, layer.padding) if need_x else None
        grad_w = torch.bmm(cols.to(grad.dtype).mT, position_major(grad.flatten(2))) if need_w else None
        grad_b = grad.sum(0) if need_b else None
        return grad_x, grad_w, grad_b, None, None


def locally_connected(x: Tensor, layer: LocallyConnected2d, feedback: Tensor | None = None) -> Tensor:
    """``layer(x)``; with ``feedback`` (shaped like ``layer.weight``) the input gradient is the
    transposed LC map with ``feedback`` instead of the weight (feedback alignment)."""
    return _LocallyConnectedMap.apply(x, layer.weight, layer.bias,
                                      layer.weight if feedback is None else feedback, layer)


class LocallyConnected2d(nn.Module):
    """2-D locally connected layer with TF "SAME" padding and untied bias.

    Input ``(N, C, H, W)`` -> output ``(N, O, ceil(H/s), ceil(W/s))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: tuple[int, int],
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        height, width = in_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = (height, width)
        self.out_size = (_out_size(height, stride), _out_size(width, stride))
        self.kernel_size = kernel_size
        self.stride = stride
        top, bottom = same_padding(height, kernel_size, stride)
        left, right = same_padding(width, kernel_size, stride)
        self.padding: Padding4 = (left, right, top, bottom)  # F.pad order

        factory = {"device": device, "dtype": dtype}
        n_pos = self.out_size[0] * self.out_size[1]
        self.weight = nn.Parameter(
            torch.empty(n_pos, in_channels * kernel_size**2, out_channels, **factory)
        )
        self.bias = (
            nn.Parameter(torch.empty(out_channels, *self.out_size, **factory)) if bias else None
        )
        self.init = "xavier_uniform"
        self.gain = 1.0
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size**2

    @property
    def fan_out(self) -> int:
        return self.out_channels * self.kernel_size**2

    def reset_parameters(self, init: str = "xavier_uniform", gain: float = 1.0) -> None:
        """Re-initialise weights (and bias) with one of :data:`INITS`.

        ``gain`` scales the weights of every scheme (1.0 gives the textbook
        scheme); biases are zero except for ``"default"`` (Conv2d-style).
        """
        bias_bound = _init_weight_(self.weight, self.fan_in, self.fan_out, init, gain)
        _init_bias_(self.bias, bias_bound)
        # Remembered so a feedback layer can reuse the same scheme.
        self.init, self.gain = init, gain

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.in_channels, *self.in_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (N, *{expected}), got {tuple(x.shape)}")
        return locally_connected(x, self)

    def columns(self, x: Tensor) -> Tensor:
        """The input patches, position-major ``(L, N, C*k*k)``: row ``l`` is what ``weight[l]`` reads."""
        return position_major(F.unfold(F.pad(x, self.padding), self.kernel_size, stride=self.stride))

    def to_dense(self) -> Tensor:
        """Equivalent dense matrix ``(O*H_out*W_out, C*H*W)`` (bias excluded).

        Built by index arithmetic rather than via unfold, so it serves as an
        independent reference in tests.
        """
        c_in, c_out, k, s = self.in_channels, self.out_channels, self.kernel_size, self.stride
        (height, width), (h_out, w_out) = self.in_size, self.out_size
        left, _, top, _ = self.padding
        dev = self.weight.device

        oh = torch.arange(h_out, device=dev).view(-1, 1, 1, 1, 1)
        ow = torch.arange(w_out, device=dev).view(1, -1, 1, 1, 1)
        ch = torch.arange(c_in, device=dev).view(1, 1, -1, 1, 1)
        ki = torch.arange(k, device=dev).view(1, 1, 1, -1, 1)
        kj = torch.arange(k, device=dev).view(1, 1, 1, 1, -1)
        row = oh * s + ki - top  # input pixel hit by tap (ki, kj) at (oh, ow)
        col = ow * s + kj - left
        shape = (h_out, w_out, c_in, k, k)
        valid = ((row >= 0) & (row < height) & (col >= 0) & (col < width)).expand(shape)
        pos = (oh * w_out + ow).expand(shape)[valid]
        pix = (ch * height * width + row * width + col).expand(shape)[valid]

        taps = self.weight.view(*shape, c_out)[valid]  # (n_valid, O)
        dense = self.weight.new_zeros(c_out, h_out * w_out, c_in * height * width)
        dense[:, pos, pix] = taps.T
        return dense.flatten(0, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, in_size={self.in_size}, "
            f"out_size={self.out_size}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, weight={tuple(self.weight.shape)}, "
            f"bias={self.bias is not None}"
        )


class LocallyConnectedTranspose2d(nn.Module):
    """Feedback counterpart of a :class:`LocallyConnected2d`.

    Maps ``(N, O, H_out, W_out)`` -> ``(N, C, H, W)`` with the sparsity pattern
    of ``W^T``, using its own weight (same shape as the forward weight) and an
    untied ``(C, H, W)`` bias. Only the geometry of ``forward_layer`` is kept;
    it is not registered as a submodule, so no parameters are shared.
    """

    def __init__(self, forward_layer: LocallyConnected2d, bias: bool = True) -> None:
        super().__init__()
        fwd = forward_layer
        self.in_channels = fwd.in_channels
        self.out_channels = fwd.out_channels
        self.in_size = fwd.in_size
        self.out_size = fwd.out_size
        self.kernel_size = fwd.kernel_size
        self.stride = fwd.stride
        self.padding = fwd.padding

        factory = {"device": fwd.weight.device, "dtype": fwd.weight.dtype}
        self.weight = nn.Parameter(torch.empty(fwd.weight.shape, **factory))
        self.bias = (
            nn.Parameter(torch.empty(fwd.in_channels, *fwd.in_size, **factory)) if bias else None
        )
        self.reset_parameters(fwd.init, fwd.gain)

    def reset_parameters(self, init: str = "xavier_uniform", gain: float = 1.0) -> None:
        """Like :meth:`LocallyConnected2d.reset_parameters` with fans swapped."""
        fan_in = self.out_channels * self.kernel_size**2
        fan_out = self.in_channels * self.kernel_size**2
        bias_bound = _init_weight_(self.weight, fan_in, fan_out, init, gain)
        _init_bias_(self.bias, bias_bound)

    @torch.no_grad()
    def load_weight_from(self, forward_layer: LocallyConnected2d) -> LocallyConnectedTranspose2d:
        """Copy the forward weights, so that this layer computes exactly ``W^T y``."""
        if forward_layer.weight.shape != self.weight.shape:
            raise ValueError(
                f"weight shape mismatch: {tuple(forward_layer.weight.shape)} "
                f"vs {tuple(self.weight.shape)}"
            )
        self.weight.copy_(forward_layer.weight)
        return self

    def forward(self, y: Tensor) -> Tensor:
        expected = (self.out_channels, *self.out_size)
        if y.dim() != 4 or tuple(y.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (N, *{expected}), got {tuple(y.shape)}")
        x = lc_transpose(
            y,
            self.weight,
            self.in_channels,
            self.in_size,
            self.kernel_size,
            self.stride,
            self.padding,
        )
        return x if self.bias is None else x + self.bias

    def extra_repr(self) -> str:
        return (
            f"{self.out_channels}, {self.in_channels}, in_size={self.out_size}, "
            f"out_size={self.in_size}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, weight={tuple(self.weight.shape)}, "
            f"bias={self.bias is not None}"
        )
