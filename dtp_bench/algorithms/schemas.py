"""Algorithm config schemas (pure dataclasses, importable without torch).

Each algorithm registers its schema here as ``algorithm/<name>_schema``; ``conf/algorithm/<name>.yaml``
extends it and sets the defaults a user sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from ..config import OptimizerConfig, register_schema


@dataclass
class AlgorithmConfig:
    """Fields every algorithm has: a name and the optimizer of the forward weights."""

    name: str = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def validate(self, key: str = "algorithm") -> None:
        self.optimizer.validate(f"{key}.optimizer")


@dataclass
class BPConfig(AlgorithmConfig):
    name: str = "bp"


register_schema("algorithm", "bp", BPConfig)
