"""Difference reconstruction loss (Meulemans et al. 2020, "A Theoretical Framework for Target
Propagation"): the feedback of block i learns to reconstruct a corrupted h_i after it has been sent
up to the output and brought back down through the whole difference-corrected feedback chain.

The reconstruction is compared with the *corrupted* activation h_i + σε, as in the authors' code
(FW-DTP's released DRL baseline compares it with the clean one, which trains a different quantity;
``regression_target=clean`` reproduces that code, as algorithm=drl_shibuya_code).
"""
from __future__ import annotations

import torch

from .base import register_algorithm
from .target_prop import TargetPropagation, squared_error


@register_algorithm("drl")
class DifferenceReconstruction(TargetPropagation):
    def feedback_loss(self, hs: list[torch.Tensor], ctxs: list[dict]) -> torch.Tensor:
        total = hs[0].new_zeros(())
        hs = [h.detach() for h in hs]
        for i in self.feedback_blocks:
            sigma = self.noise[i]
            noisy = hs[i] + sigma * self.randn_like(hs[i])
            with torch.no_grad():  # up to the first-target level, then down to h_{i+1}: no gradient
                below, upper = None, noisy
                for k in range(i, self.first_level):
                    below, upper = upper, self.network.blocks[k](upper)
                upper = self.lifted(self.first_level - 1, upper, below)  # into the space targets live in
                for k in reversed(range(i + 1, self.first_level)):
                    upper = self.propagate(k, upper, hs, ctxs)
            # the same difference-corrected step that sends targets down; only g_i gets this gradient
            reconstruction = self.propagate(i, upper, hs, ctxs)
            reference = noisy if self.cfg.regression_target == "noisy" else hs[i]
            total = total + squared_error(reconstruction, reference, self.cfg.feedback_loss_reduction,
                                          runs=self.runs) / sigma ** 2
        return total
