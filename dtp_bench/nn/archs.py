"""Convolutional and locally connected architectures, built from the same blocks as ``fc``.

* ``lc`` / ``conv`` — Bartunov et al. (2018) Table 3: strided locally connected layers with SAME
  padding (no pooling), then fully connected layers; ``conv`` has the same shapes with shared
  weights (their "BP ConvNet").
* ``lenet`` / ``vgg`` — Ernoult et al. (2022): Conv → activation → MaxPool blocks, then a classifier.

Builders take ``(cfg, input_shape, num_classes)``; the config carries no dataset name, so the
paper's per-dataset stacks are chosen from the input shape and the class count (``paper_stack``).
Every block knows its feedback counterpart (``Block.make_feedback``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ConfigError
from .blocks import ARCH_BUILDERS, Block, Network, dense_blocks, hidden_block
from .lc import LocallyConnected2d, same_padding

Stack = list[tuple[int, int, int]]  # (kernel, channels, stride) per layer

# Bartunov et al. (2018) Table 3; the third CIFAR layer is printed without a stride (we read 1).
MNIST_STACK: Stack = [(3, 32, 2), (3, 64, 2)]
CIFAR_STACK: Stack = [(5, 64, 2), (5, 128, 2), (3, 256, 1)]
# Their ImageNet stack (9×9,48,4)(3×3,48,2)(5×5,96,1)(3×3,96,2)(3×3,192,1)(3×3,192,2)(3×3,384,1) takes
# 224×224 images to 7×7. Its first layer is a stem that brings 224×224 down to 56×56; a 32×32 image
# is already smaller than that, so the 32×32 adaptation replaces the stem by a 3×3 stride-1 layer
# (the smallest odd kernel; 9×9 at 1/7 of the resolution) and keeps the other six layers as printed:
# 32 → 32 → 16 → 16 → 8 → 8 → 4 → 4, then the softmax layer on 384·4·4 features, no hidden FC layer
# (as in the paper). About 74M weights, against about 260M for the 224×224 original.
IMAGENET32_STACK: Stack = [(3, 48, 1), (3, 48, 2), (5, 96, 1), (3, 96, 2), (3, 192, 1), (3, 192, 2),
                           (3, 384, 1)]
PAPER_FC_HIDDEN = [1024]


def paper_stack(input_shape: tuple[int, ...], num_classes: int) -> tuple[Stack, list[int]]:
    """Bartunov et al.'s (layers, fc_hidden) for a dataset, recognised by its shape.

    One channel (MNIST, Fashion-MNIST) → the MNIST stack; 1000 classes (ImageNet 32×32) → the
    32×32 adaptation of the ImageNet stack; anything else (CIFAR-10/100) → the CIFAR stack. The
    layers are applied with SAME padding, so other input sizes work too."""
    if input_shape[0] == 1:
        return MNIST_STACK, PAPER_FC_HIDDEN
    if num_classes >= 1000:
        return IMAGENET32_STACK, []
    return CIFAR_STACK, PAPER_FC_HIDDEN


def _require_images(cfg, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise ConfigError(f"arch: {cfg.name!r} needs image inputs (C, H, W), got shape {input_shape} "
                          f"(dataset.pca_components flattens them; use arch=fc)")


def _layer_stack(cfg, input_shape: tuple[int, ...], num_classes: int, local: bool) -> Network:
    """Strided LC (``local``) or conv layers with SAME padding, then the dense head."""
    _require_images(cfg, input_shape)
    default_layers, default_hidden = paper_stack(input_shape, num_classes)
    layers = [tuple(layer) for layer in cfg.layers] if cfg.layers is not None else default_layers
    fc_hidden = list(cfg.fc_hidden) if cfg.fc_hidden is not None else default_hidden
    channels, height, width = input_shape
    blocks = []
    for kernel, out_channels, stride in layers:
        before: list[nn.Module] = []
        if local:
            op = LocallyConnected2d(channels, out_channels, (height, width), kernel, stride, bias=cfg.bias)
        else:  # TF "SAME" as the LC layers (and Bartunov's TF code): the smaller half of the padding first
            top, bottom = same_padding(height, kernel, stride)
            left, right = same_padding(width, kernel, stride)
            if top == bottom and left == right:
                op = nn.Conv2d(channels, out_channels, kernel, stride, (top, left), bias=cfg.bias)
            else:  # one pixel more after than before: an explicit pad, then an unpadded conv
                before = [nn.ZeroPad2d((left, right, top, bottom))]
                op = nn.Conv2d(channels, out_channels, kernel, stride, 0, bias=cfg.bias)
        blocks.append(hidden_block(cfg, op, *before))
        channels, height, width = out_channels, math.ceil(height / stride), math.ceil(width / stride)
    blocks += dense_blocks(cfg, (channels, height, width), fc_hidden, num_classes)
    return Network(blocks, input_shape, num_classes)


def build_lc(cfg, input_shape: tuple[int, ...], num_classes: int) -> Network:
    return _layer_stack(cfg, input_shape, num_classes, local=True)


def build_conv(cfg, input_shape: tuple[int, ...], num_classes: int) -> Network:
    return _layer_stack(cfg, input_shape, num_classes, local=False)


def pool_input_padding(cfg, size: int) -> tuple[int, int]:
    """Zero padding (before, after) of one image side for the conv-pool stack.

    None when every pool covers its whole input. When one would drop rows (VGG's MaxPool(2, 2) on
    28 → 14 → 7 → 3 loses a row; a fifth pool would get a 1×1 input), the side is padded up to the
    next multiple of pool_stride ** n_pools: 28×28 → 32×32, the CIFAR geometry, so (F-)MNIST goes
    through the same five halvings to 1×1 and the classifier sees 512 features."""
    k, s, p = cfg.pool_kernel, cfg.pool_stride, cfg.pool_padding
    current = size
    for _ in cfg.channels:
        out = (current + 2 * p - k) // s + 1
        if out < 1 or (out - 1) * s + k - 2 * p < current:
            multiple = s ** len(cfg.channels)
            total = -size % multiple
            return total // 2, total - total // 2
        current = out
    return 0, 0


def build_conv_pool(cfg, input_shape: tuple[int, ...], num_classes: int) -> Network:
    """LeNet / simple VGG (Ernoult et al. 2022): Conv → act → MaxPool per ``cfg.channels`` entry,
    then the dense head; its flatten size is measured on the input shape, never hard-coded."""
    _require_images(cfg, input_shape)
    channels, height, width = input_shape
    top, bottom = pool_input_padding(cfg, height)
    left, right = pool_input_padding(cfg, width)
    pad: list[nn.Module] = [nn.ZeroPad2d((left, right, top, bottom))] if top + bottom + left + right else []
    blocks = []
    for out_channels in cfg.channels:
        conv = nn.Conv2d(channels, out_channels, cfg.kernel_size, 1, cfg.kernel_size // 2, bias=cfg.bias)
        pool = nn.MaxPool2d(cfg.pool_kernel, cfg.pool_stride, cfg.pool_padding)
        blocks.append(hidden_block(cfg, conv, *pad, pool=pool))
        channels, pad = out_channels, []  # the padding belongs to the first block only
    features = _output_shape(blocks, input_shape)
    blocks += dense_blocks(cfg, features, list(cfg.fc_hidden), num_classes)
    return Network(blocks, input_shape, num_classes)


def _output_shape(blocks: list[Block], input_shape: tuple[int, ...]) -> tuple[int, ...]:
    x = torch.zeros(2, *input_shape)
    with torch.no_grad():
        for block in blocks:
            x = block(x)
    return tuple(x.shape[1:])


ARCH_BUILDERS.update(lc=build_lc, conv=build_conv, lenet=build_conv_pool, vgg=build_conv_pool)
