"""Architecture config schemas (pure dataclasses, importable without torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check, check_choice, check_positive, register_schema

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "elu", "sigmoid", "linear")
INITS = ("xavier_uniform", "xavier_normal", "orthogonal", "kaiming_uniform", "kaiming_normal", "default")


@dataclass
class ArchConfig:
    """Fields every architecture shares."""

    name: str = "fc"
    activation: str = "tanh"  # hidden nonlinearity
    output_activation: str = "linear"  # the logits go to softmax cross-entropy
    negative_slope: float = 0.01  # leaky_relu only
    bias: bool = True
    init: str = "xavier_uniform"
    init_gain: float = 1.0
    batch_norm: bool = False  # parameter-free batch normalisation after each hidden nonlinearity,
    #                           batch statistics at train and test time (FW-DTP's BN variant)

    def validate(self, key: str = "arch") -> None:
        check_choice(self.activation, f"{key}.activation", ACTIVATIONS)
        check_choice(self.output_activation, f"{key}.output_activation", ACTIVATIONS)
        check_choice(self.init, f"{key}.init", INITS)
        check_positive(self.init_gain, f"{key}.init_gain")
        check_positive(self.negative_slope, f"{key}.negative_slope", allow_zero=True)


@dataclass
class FCArchConfig(ArchConfig):
    """Fully connected: input (flattened) → hidden[0] → … → hidden[-1] → classes."""

    hidden: list[int] = field(default_factory=lambda: [256] * 5)

    def validate(self, key: str = "arch") -> None:
        super().validate(key)
        check(all(h > 0 for h in self.hidden), f"{key}.hidden", f"widths must be > 0, got {self.hidden}")


register_schema("arch", "fc", FCArchConfig)
