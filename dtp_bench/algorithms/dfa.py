"""Direct feedback alignment (Nøkland 2016): the output error e = ∂L/∂logits reaches every hidden
block l directly through its own fixed random matrix B_l (n_classes × size of h_l).

Each block sees a detached copy of its input, so gradients stay inside a block. The output block
gets its true gradient e; hidden block l gets the gradient (e B_l), reshaped like its output h_l,
injected at h_l and backpropagated through that block only. For a block Linear/Conv/LC →
activation this is the textbook δ_l = (e B_l) ⊙ σ'(a_l) at the pre-activation. For a block with
max pooling (and batch normalisation) after the activation, the injected gradient also goes
through the pool (to the argmax positions) and the normalisation before σ'(a_l): that is the
local derivative of h_l with respect to a_l, so each hidden layer is still trained from a dense
random projection of e alone ("true" DFA on conv and LC layers, not a tiled kernel).
"""
from __future__ import annotations

import math

import torch

from ..nn.blocks import init_weight
from ..nn.stacked import by_run
from .base import register_algorithm
from .fa import FixedFeedbackAlgorithm, resolve_init


@register_algorithm("dfa")
class DirectFeedbackAlignment(FixedFeedbackAlgorithm):
    def __init__(self, cfg, network, epochs):
        feedback = []
        for block in list(network.blocks)[:-1]:
            # B_l maps the error (n_classes) to h_l: fans (n_classes, |h_l|)
            matrix = torch.empty(network.num_classes, math.prod(block.out_shape))
            scheme, gain = resolve_init(cfg, block.weight_op)
            init_weight(matrix, scheme, gain, fan_in=network.num_classes, fan_out=matrix.shape[1])
            feedback.append(matrix)
        super().__init__(cfg, network, epochs, feedback)

    def forward_update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hs = self.network.activations(x, detach_inputs=True)
        logits, hidden = hs[-1], hs[1:-1]
        loss = self.cross_entropy(logits, y)
        (error,) = torch.autograd.grad(loss.sum(), logits)
        # one matmul per hidden layer, then a single backward pass through all blocks at once
        grads = [self.project(error, matrix).view_as(h) for h, matrix in zip(hidden, self.feedback)]
        torch.autograd.backward([logits, *hidden], [error, *grads])
        return loss.detach(), logits.detach()

    def project(self, error: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """e B_l; with K runs, B_l is ``(K, n_classes, |h_l|)`` and each run uses its own."""
        if self.runs == 1:
            return error @ matrix.to(error.dtype)
        return torch.bmm(by_run(error, self.runs), matrix.to(error.dtype)).flatten(0, 1)
