"""Tests for the locally connected layers in dtp_bench.nn.lc."""

from __future__ import annotations

import math

import pytest
import torch

from dtp_bench.nn.lc import (
    LocallyConnected2d,
    LocallyConnectedTranspose2d,
    lc_transpose,
    same_padding,
)

F64 = torch.float64

# (in_size, in_channels, out_channels, kernel, stride): small geometries covering
# symmetric padding (s=1), TF's asymmetric padding (s=2, even input) and odd sizes.
SMALL_CASES = [
    ((5, 6), 2, 3, 3, 1),
    ((6, 8), 2, 3, 3, 2),
    ((7, 7), 3, 2, 3, 2),
    ((6, 6), 2, 2, 2, 1),
]


def _layer(in_size, c_in, c_out, k, s, bias=True, seed=0) -> LocallyConnected2d:
    torch.manual_seed(seed)
    layer = LocallyConnected2d(c_in, c_out, in_size, k, s, bias=bias).to(F64)
    if layer.bias is not None:  # default bias is zero, which would hide bias bugs
        with torch.no_grad():
            layer.bias.normal_()
    return layer


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(28, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (8, 3, 1, (1, 1)), (32, 5, 2, (1, 2)), (5, 1, 2, (0, 0))],
)
def test_same_padding_matches_tf(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize(
    ("in_size", "c_in", "c_out", "k", "s", "out_size"),
    [
        ((28, 28), 1, 32, 3, 2, (14, 14)),
        ((32, 32), 3, 64, 5, 2, (16, 16)),
        ((8, 8), 128, 256, 3, 1, (8, 8)),
        ((7, 7), 2, 4, 3, 2, (4, 4)),
    ],
)
def test_output_shape(in_size, c_in, c_out, k, s, out_size):
    layer = LocallyConnected2d(c_in, c_out, in_size, k, s)
    assert layer.out_size == out_size
    assert layer.weight.shape == (out_size[0] * out_size[1], c_in * k * k, c_out)
    assert layer.bias is not None and layer.bias.shape == (c_out, *out_size)
    y = layer(torch.randn(2, c_in, *in_size))
    assert y.shape == (2, c_out, *out_size)


def test_padding_is_asymmetric_for_stride_2():
    layer = LocallyConnected2d(1, 1, (6, 8), 3, stride=2)
    assert layer.padding == (0, 1, 0, 1)  # extra pixel right/bottom, as in TF


@pytest.mark.parametrize("case", SMALL_CASES)
def test_forward_matches_dense(case):
    layer = _layer(*case)
    x = torch.randn(3, case[1], *case[0], dtype=F64)
    dense = layer.to_dense()
    expected = x.flatten(1) @ dense.T + layer.bias.flatten()
    torch.testing.assert_close(layer(x).flatten(1), expected, rtol=0, atol=1e-10)


def test_dense_has_local_sparsity():
    layer = _layer((6, 6), 2, 3, 3, 1)
    dense = layer.to_dense()
    # Each output unit sees at most C*k*k inputs; interior ones see exactly that many.
    nnz = (dense != 0).sum(1)
    assert nnz.max() == 2 * 9
    assert (dense != 0).sum() == layer.weight.numel() - _n_padding_taps(layer)


def _n_padding_taps(layer: LocallyConnected2d) -> int:
    """Number of weight entries that only ever multiply zero padding."""
    ones = torch.ones(1, layer.in_channels, *layer.in_size, dtype=F64)
    cols = torch.nn.functional.unfold(
        torch.nn.functional.pad(ones, layer.padding), layer.kernel_size, stride=layer.stride
    )
    return int((cols == 0).sum()) * layer.out_channels


@pytest.mark.parametrize("case", SMALL_CASES)
def test_lc_transpose_is_vjp(case):
    # the reference is vᵀ D with D the dense matrix built by index arithmetic (to_dense), which
    # shares no code with lc_transpose (the layer's own backward calls lc_transpose, so autograd's
    # VJP is checked against the same reference rather than used as one)
    layer = _layer(*case, bias=False)
    x = torch.randn(2, case[1], *case[0], dtype=F64, requires_grad=True)
    y = layer(x)
    v = torch.randn_like(y)
    expected = (v.flatten(1) @ layer.to_dense()).view_as(x)
    got = lc_transpose(
        v, layer.weight, layer.in_channels, layer.in_size, layer.kernel_size,
        layer.stride, layer.padding,
    )
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    (vjp,) = torch.autograd.grad(y, x, v)
    torch.testing.assert_close(vjp, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", SMALL_CASES)
def test_transpose_layer_with_forward_weights_is_dense_transpose(case):
    layer = _layer(*case)
    back = LocallyConnectedTranspose2d(layer).to(F64)
    assert back.weight.shape == layer.weight.shape
    assert back.bias is not None and back.bias.shape == (case[1], *case[0])
    assert not torch.equal(back.weight, layer.weight)  # independent init
    with torch.no_grad():
        back.bias.normal_()
    back.load_weight_from(layer)

    y = torch.randn(3, case[2], *layer.out_size, dtype=F64)
    expected = y.flatten(1) @ layer.to_dense() + back.bias.flatten()
    got = back(y)
    assert got.shape == (3, case[1], *case[0])
    torch.testing.assert_close(got.flatten(1), expected, rtol=0, atol=1e-10)


def test_transpose_weight_is_independent_parameter():
    layer = LocallyConnected2d(2, 3, (6, 6), 3, stride=2)
    back = LocallyConnectedTranspose2d(layer, bias=False)
    back.load_weight_from(layer)
    assert back.bias is None
    assert back.weight.data_ptr() != layer.weight.data_ptr()
    assert len(list(back.parameters())) == 1
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert not torch.equal(back.weight, layer.weight)


def test_bartunov_mnist_lc_weight_counts():
    lc1 = LocallyConnected2d(1, 32, (28, 28), 3, stride=2)
    lc2 = LocallyConnected2d(32, 64, lc1.out_size, 3, stride=2)
    assert lc1.weight.numel() == 56448
    assert lc2.weight.numel() == 903168
    assert lc2.out_size == (7, 7)


def _big_layer(init: str, gain: float = 1.0) -> LocallyConnected2d:
    torch.manual_seed(0)
    layer = LocallyConnected2d(16, 32, (16, 16), 3, stride=1)
    layer.reset_parameters(init, gain)
    return layer


@pytest.mark.parametrize(
    ("init", "std"),
    [
        ("xavier_uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("xavier_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("kaiming_uniform", lambda fi, fo: math.sqrt(2 / fi)),
        ("default", lambda fi, fo: 1 / math.sqrt(3 * fi)),
    ],
)
def test_init_std(init, std):
    layer = _big_layer(init)
    fan_in, fan_out = 16 * 9, 32 * 9
    expected = std(fan_in, fan_out)
    assert layer.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(layer.weight.mean().item()) < 0.05 * expected
    if init == "default":
        bound = 1 / math.sqrt(fan_in)
        assert layer.bias.abs().max() <= bound and layer.bias.abs().max() > 0.5 * bound
    else:
        assert torch.count_nonzero(layer.bias) == 0


def test_xavier_uniform_respects_gain_and_bound():
    layer = _big_layer("xavier_uniform", gain=2.0)
    bound = 2.0 * math.sqrt(6 / (16 * 9 + 32 * 9))
    assert layer.weight.abs().max() <= bound
    assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


@pytest.mark.parametrize(("c_in", "c_out"), [(2, 32), (8, 4)])  # C*k*k < O and > O
def test_orthogonal_init_per_position(c_in, c_out):
    layer = LocallyConnected2d(c_in, c_out, (4, 4), 3)
    layer.reset_parameters("orthogonal", gain=0.5)
    w = layer.weight.double() / 0.5
    small = min(w.shape[1:])
    gram = w.mT @ w if w.shape[1] >= w.shape[2] else w @ w.mT
    eye = torch.eye(small, dtype=F64).expand_as(gram)
    torch.testing.assert_close(gram, eye, rtol=0, atol=1e-5)
    assert not torch.allclose(w[0], w[1])  # positions are drawn independently


def test_transpose_init_uses_swapped_fans():
    layer = LocallyConnected2d(4, 64, (16, 16), 3)
    layer.reset_parameters("kaiming_uniform")
    back = LocallyConnectedTranspose2d(layer)
    assert back.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


def test_unknown_init_raises():
    layer = LocallyConnected2d(1, 2, (4, 4), 3)
    with pytest.raises(ValueError, match="'glorot'.*xavier_uniform"):
        layer.reset_parameters("glorot")


def test_wrong_input_shape_raises():
    layer = LocallyConnected2d(1, 2, (4, 4), 3)
    with pytest.raises(ValueError, match="expected input"):
        layer(torch.randn(1, 1, 5, 4))


def test_gradients_flow_to_weight_and_bias():
    layer = _layer((7, 7), 3, 4, 3, 2)
    back = LocallyConnectedTranspose2d(layer).to(F64)
    x = torch.randn(2, 3, 7, 7, dtype=F64)
    loss = layer(x).square().sum() + back(layer(x)).square().sum()
    loss.backward()
    for module in (layer, back):
        for param in (module.weight, module.bias):
            assert param.grad is not None
            assert param.grad.shape == param.shape
            assert torch.isfinite(param.grad).all()
            assert param.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_dtypes(dtype):
    ref = _layer((6, 8), 2, 3, 3, 2)
    layer = _layer((6, 8), 2, 3, 3, 2).to(dtype)
    back = LocallyConnectedTranspose2d(layer).load_weight_from(layer)
    x = torch.randn(2, 2, 6, 8, dtype=F64)
    y = layer(x.to(dtype))
    assert y.dtype == dtype and back(y).dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(y.double(), ref(x), rtol=tol, atol=tol)
