"""Backpropagation: the reference every other algorithm is compared with."""
from __future__ import annotations

import torch

from .base import Algorithm, register_algorithm


@register_algorithm("bp")
class Backprop(Algorithm):
    def __init__(self, cfg, network, epochs):
        super().__init__(cfg, network, epochs)
        self.forward_optimizer()

    def forward_update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(x)
        loss = self.cross_entropy(logits, y)
        loss.sum().backward()  # one run: the loss itself; K runs: each run's gradient is its own
        return loss.detach(), logits.detach()
