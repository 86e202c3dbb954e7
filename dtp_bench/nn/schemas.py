"""Architecture config schemas (pure dataclasses, importable without torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check, check_choice, check_positive, register_schema

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "elu", "sigmoid", "linear")
INITS = ("xavier_uniform", "xavier_normal", "orthogonal", "kaiming_uniform", "kaiming_normal", "uniform",
         "default")  # uniform: U(−gain, gain)


@dataclass
class ArchConfig:
    """Fields every architecture shares."""

    name: str = "fc"  # the builder: fc, lc, conv, lenet or vgg (set by the option file)
    activation: str = "tanh"  # hidden nonlinearity: tanh, relu, leaky_relu, elu, sigmoid or linear
    output_activation: str = "linear"  # the logits go to softmax cross-entropy
    negative_slope: float = 0.01  # leaky_relu only
    bias: bool = True  # biases in the forward layers
    init: str = "xavier_uniform"  # of the forward weights: xavier_uniform, xavier_normal, orthogonal,
    #   kaiming_uniform, kaiming_normal, uniform (U(−gain, gain)) or default (PyTorch's); biases start
    #   at 0 except with default
    init_gain: float = 1.0  # that init's gain
    batch_norm: bool = False  # parameter-free batch normalisation after each hidden nonlinearity,
    #                           batch statistics at train and test time (FW-DTP's BN variant)
    batch_norm_eps: float = 1e-5  # (x − mean) / √(var + eps), also in FW-DTP-BN's feedback and targets
    #                               (the FW-DTP authors' code: / (std + 1e-12), i.e. eps ≈ 1e-24)

    def validate(self, key: str = "arch") -> None:
        check_choice(self.activation, f"{key}.activation", ACTIVATIONS)
        check_choice(self.output_activation, f"{key}.output_activation", ACTIVATIONS)
        check_choice(self.init, f"{key}.init", INITS)
        check_positive(self.init_gain, f"{key}.init_gain")
        check_positive(self.batch_norm_eps, f"{key}.batch_norm_eps")
        check_positive(self.negative_slope, f"{key}.negative_slope", allow_zero=True)


@dataclass
class FCArchConfig(ArchConfig):
    """Fully connected: input (flattened) → hidden[0] → … → hidden[-1] → classes."""

    hidden: list[int] = field(default_factory=lambda: [256] * 5)  # hidden widths, input side first

    def validate(self, key: str = "arch") -> None:
        super().validate(key)
        check(all(h > 0 for h in self.hidden), f"{key}.hidden", f"widths must be > 0, got {self.hidden}")


register_schema("arch", "fc", FCArchConfig)


@dataclass
class LayerStackArchConfig(ArchConfig):
    """Bartunov et al. (2018) Table 3: strided locally connected layers (``lc``), or the same shapes
    with shared weights (``conv``, their "BP ConvNet"), then fully connected layers.

    ``layers``: [kernel, channels, stride] per layer, SAME padding. null = the paper's stack for the
    input: 1 channel → MNIST; 1000 classes → the ImageNet 32×32 adaptation; otherwise → CIFAR
    (see ``dtp_bench.nn.archs.paper_stack``). ``fc_hidden``: null = the paper's ([1024], or none
    for ImageNet)."""

    name: str = "lc"
    # [[kernel, channels, stride], ...], one per LC/conv layer (SAME padding); null = the paper's stack
    layers: list[list[int]] | None = None
    fc_hidden: list[int] | None = None  # widths of the FC layers after them; null = the paper's

    def validate(self, key: str = "arch") -> None:
        super().validate(key)
        for i, layer in enumerate(self.layers or []):
            check(len(layer) == 3 and all(v > 0 for v in layer), f"{key}.layers[{i}]",
                  f"must be [kernel, channels, stride] with positive values, got {layer}")
            # nn.Conv2d pads symmetrically, which gives the SAME output size only for odd kernels
            check(self.name != "conv" or layer[0] % 2 == 1, f"{key}.layers[{i}]",
                  f"arch=conv needs odd kernels for SAME padding, got kernel {layer[0]}; use arch=lc")
        check(all(h > 0 for h in self.fc_hidden or []), f"{key}.fc_hidden",
              f"widths must be > 0, got {self.fc_hidden}")


@dataclass
class ConvPoolArchConfig(ArchConfig):
    """Ernoult et al. (2022)'s convolutional nets: per entry of ``channels`` a block
    Conv(kernel, stride 1, 'same' padding) → activation → MaxPool(pool_kernel, pool_stride,
    pool_padding), then Flatten → ``fc_hidden`` Linear+activation blocks → Linear to the classes.
    Defaults: LeNet. PyTorch's default init and ELU, as in their code."""

    name: str = "lenet"
    activation: str = "elu"
    init: str = "default"
    channels: list[int] = field(default_factory=lambda: [32, 64])  # output channels of each conv block
    kernel_size: int = 5  # conv kernel size (odd; stride 1, 'same' padding)
    pool_kernel: int = 3  # MaxPool kernel size
    pool_stride: int = 2  # MaxPool stride
    pool_padding: int = 1  # MaxPool padding (at most pool_kernel / 2)
    fc_hidden: list[int] = field(default_factory=lambda: [512])  # widths of the Linear blocks before the output

    def validate(self, key: str = "arch") -> None:
        super().validate(key)
        check(len(self.channels) > 0 and all(c > 0 for c in self.channels), f"{key}.channels",
              f"needs at least one block and positive widths, got {self.channels}")
        check(self.kernel_size % 2 == 1, f"{key}.kernel_size",
              f"must be odd ('same' padding k//2 keeps the size), got {self.kernel_size}")
        check_positive(self.pool_kernel, f"{key}.pool_kernel")
        check_positive(self.pool_stride, f"{key}.pool_stride")
        check(0 <= 2 * self.pool_padding <= self.pool_kernel, f"{key}.pool_padding",
              f"must be in [0, pool_kernel/2] (PyTorch's MaxPool2d rule), got {self.pool_padding}")
        check(all(h > 0 for h in self.fc_hidden), f"{key}.fc_hidden",
              f"widths must be > 0, got {self.fc_hidden}")


@dataclass
class VGGArchConfig(ConvPoolArchConfig):
    """Ernoult et al.'s "simple VGG": five Conv3×3 → ELU → MaxPool(2, 2) blocks, then the classifier.
    Inputs whose side is not a multiple of 32 are zero-padded up to one (28×28 → 32×32)."""

    name: str = "vgg"
    channels: list[int] = field(default_factory=lambda: [128, 128, 256, 256, 512])
    kernel_size: int = 3
    pool_kernel: int = 2
    pool_stride: int = 2
    pool_padding: int = 0
    fc_hidden: list[int] = field(default_factory=list)


register_schema("arch", "lc", LayerStackArchConfig)
register_schema("arch", "conv", LayerStackArchConfig)
register_schema("arch", "lenet", ConvPoolArchConfig)
register_schema("arch", "vgg", VGGArchConfig)
