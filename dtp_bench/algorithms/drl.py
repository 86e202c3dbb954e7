"""Difference reconstruction loss (Meulemans et al. 2020, "A Theoretical Framework for Target
Propagation"): the feedback of block i learns to reconstruct a corrupted h_i after it has been sent
up to the output and brought back down through the whole difference-corrected feedback chain.

The reconstruction is compared with the *corrupted* activation h_i + σε, as in the authors' code
(FW-DTP's released DRL baseline compares it with the clean one, which trains a different quantity).
"""
from __future__ import annotations

import torch

from .base import register_algorithm
from .target_prop import TargetPropagation, squared_error


@register_algorithm("drl")
class DifferenceReconstruction(TargetPropagation):
    def reconstruct(self, i: int, upper: torch.Tensor, hs: list[torch.Tensor], ctxs: list[dict]) -> torch.Tensor:
        """Bring a value of h_{i+1} down to h_i with g_i and the difference correction."""
        h_i, h_next = hs[i], hs[i + 1]
        g = self.feedback[str(i)]
        return h_i + g(self.lifted(i, upper, h_i), ctxs[i]) - g(self.lifted(i, h_next, h_i), ctxs[i])

    def feedback_loss(self, hs: list[torch.Tensor], ctxs: list[dict]) -> torch.Tensor:
        total = hs[0].new_zeros(())
        hs = [h.detach() for h in hs]
        for i in self.feedback_blocks:
            sigma = self.noise[i]
            noisy = hs[i] + sigma * torch.randn_like(hs[i])
            with torch.no_grad():  # up to the first-target level, then down to h_{i+1}: no gradient
                upper = noisy
                for k in range(i, self.first_level):
                    upper = self.network.blocks[k](upper)
                for k in reversed(range(i + 1, self.first_level)):
                    upper = self.reconstruct(k, upper, hs, ctxs)
            reconstruction = self.reconstruct(i, upper, hs, ctxs)  # only g_i receives this gradient
            total = total + squared_error(reconstruction, noisy, self.cfg.feedback_loss_reduction) / sigma ** 2
        return total
