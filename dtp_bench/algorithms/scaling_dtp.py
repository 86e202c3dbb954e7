"""L-DRL (Ernoult et al. 2022, "Towards scaling difference target propagation by learning
backprop targets"; the ``DTP`` model of their scalingDTP code). Registered as ``scaling_dtp`` and
``l_drl``.

Indexing. As in the engine (target_prop.py): block i maps s_i to s_{i+1}; s_0 is the input and s_L
the logits; g_i (the feedback of block i) maps s_{i+1}-space back to s_i-space. The paper's
"layer i" (F_i: s_{i-1} → s_i, G_i: s_i → s_{i-1}) is our block i-1. Block 0 has no feedback (no
target is needed for the input), so feedback exists for blocks 1..L-1, and every per-layer list
(``noise`` σ_i, ``feedback_iterations`` K_i, ``feedback_optimizer.lr``) is in forward order over
those blocks: for LeNet [conv_1, fc1, fc2], for the simple VGG [conv_1, …, conv_4, fc].

Per minibatch:
  1. forward pass with detached block inputs (no grad), s_0 … s_L and the pooling indices;
  2. feedback training: for each block i ≥ 1, K_i iterations of the L-DRL loss
        r = g(s_{i+1}); dx = σ·N(0, I); dr = g(f(s_i + dx)) − r; dy = σ·N(0, I);
        dr_y = g(s_{i+1} + dy) − r;
        loss = −2·mean_b Σ(dx ⊙ dr) + mean_b Σ dr_y²
     (2σ² times the slides' −(1/σ²)εᵀ(r_ε − r) + (1/(2σ²))‖r_η − r‖², exactly as scalingDTP's
     feedback loss: their tuned feedback learning rates assume this scale; the paper's form
     would need lr / (2σ²)),
     (g(f(s_i + dx)) unpools with the noisy pass's indices, g(s_{i+1} + dy) with the clean ones),
     each followed by one step of the per-layer feedback optimizer (SGD momentum 0.9, created once,
     so momentum persists across batches);
  3. the engine's fresh forward pass, targets t_L = s_L − β ∂CE_sum/∂s_L,
     t_i = s_i + g_i(t_{i+1}) − g_i(s_{i+1}), and one forward step on Σ_i ½‖s_i − t_i‖².

Two implementations of step 2 (``lockstep``):
  * False — the plain per-layer loop: the loss above, literally, with autograd; the reference.
  * True — all layers advance together (iteration k updates every layer with K_i > k in one
    optimizer step; layers are independent, so this changes nothing), and the gradient of a
    mirrored feedback block g = post ∘ W ∘ pre (pre: parameter-free ops such as MaxUnpool → ELU;
    W: a Linear or ConvTranspose2d; post: reshapes) is computed in closed form. g's bias and pre's
    value at the clean point cancel in both differences, so with p0 = pre(s_{i+1}):
        dr   = post(W·u1), u1 = pre(f(s_i + dx); noisy indices) − p0
        dr_y = post(W·u2), u2 = pre(s_{i+1} + dy; clean indices) − p0
        ∂loss/∂W = wgrad(−2/B·dx, u1) + wgrad(2/B·W·u2, u2),  ∂loss/∂bias = 0
     where wgrad(c, u) is the weight gradient of the op at input u for output gradient c. Per
     iteration that is one forward of f, one W-product on B samples and one weight gradient on 2B,
     against f plus three g passes and their backward for the literal loss. Other feedback
     blocks (placement=output, locally connected ops, replaced modules) fall back to the literal
     loss, summed over layers with one backward per iteration.
  Noise comes from one torch.Generator per layer (per layer and run, for batched runs), seeded from
  the run's stream once per batch,
  and each layer draws dx then dy per iteration, so both implementations consume the same random
  numbers and give the same result up to rounding (tests/test_scaling_dtp.py checks it).

Feedback biases therefore never change under L-DRL (their gradient is exactly zero), and they
cancel in the difference-corrected targets too: they are kept only to mirror the reference code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, per_layer
from ..nn.blocks import Block, FeedbackBlock, MaxUnpool, run_feedback_ops, run_ops_ctx
from ..nn.stacked import StackedConvTranspose2d, StackedLinear, per_run_sum
from ..optim import build_optimizer
from .base import register_algorithm
from .target_prop import Forward, TargetPropagation

RESHAPE_OPS = (nn.Flatten, nn.Unflatten, nn.Identity)
# act(0) = 0 exactly, so act(unpool(z)) = unpool(act(z)) (unpooling writes zeros elsewhere)
ZERO_PRESERVING = (nn.ELU, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity)
# strictly increasing: max pooling commutes with them, indices included
STRICTLY_MONOTONE = (nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


@dataclass
class _Layer:
    """What one feedback layer's iterations need on the current batch."""

    block: int  # engine index i of the block (g_i maps s_{i+1} → s_i)
    iterations: int
    sigma: float
    x: torch.Tensor  # s_i, the block's input
    y: torch.Tensor  # s_{i+1} as g_i reads it
    ctx: dict  # clean forward context (pooling indices)
    generators: list[torch.Generator]  # one per run (batched runs: K; a single run: 1)
    fast: _ClosedForm | None = None


class _ClosedForm:
    """Closed-form L-DRL gradient of g = post ∘ W ∘ pre (see the module docstring)."""

    def __init__(self, pre: list[nn.Module], op: nn.Module, block: Block, layer: _Layer):
        self.pre, self.op = _commute(pre, MaxUnpool, ZERO_PRESERVING), op
        self.forward_ops = _commute(list(block.ops), STRICTLY_MONOTONE, nn.MaxPool2d)
        with torch.no_grad():
            self.p0 = self.apply_pre(layer.y, layer.ctx)

    @staticmethod
    def split(g: nn.Module) -> tuple[list[nn.Module], nn.Module] | None:
        """(pre ops, weight op) when g qualifies, else None."""
        if not isinstance(g, FeedbackBlock):
            return None
        ops = list(g.ops)
        trained = [k for k, op in enumerate(ops) if any(p.requires_grad for p in op.parameters())]
        if len(trained) != 1:
            return None
        w = trained[0]
        op = ops[w]
        if type(op) in (StackedLinear, StackedConvTranspose2d):  # batched runs
            pass
        elif type(op) is nn.ConvTranspose2d:
            if op.groups != 1 or op.padding_mode != "zeros":
                return None
        elif type(op) is not nn.Linear:
            return None
        if not all(isinstance(o, RESHAPE_OPS) for o in ops[w + 1:]):
            return None
        return ops[:w], op

    def forward_ctx(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The block's ``forward_ctx`` with each strictly monotone activation moved after the max
        pooling that follows it: same values and indices (argmax is unchanged by a strictly
        increasing map; only exact float ties after saturation could differ), on 1/stride² of
        the elements."""
        return run_ops_ctx(self.forward_ops, x)

    def apply_pre(self, y: torch.Tensor, ctx: dict) -> torch.Tensor:
        """g's ops before W, with act(0) = 0 activations applied before unpooling (exact)."""
        return run_feedback_ops(self.pre, y, ctx)

    def product(self, u: torch.Tensor) -> torch.Tensor:
        """W·u without the bias."""
        op = self.op
        if isinstance(op, (StackedLinear, StackedConvTranspose2d)):
            return op.product(u)
        if isinstance(op, nn.Linear):
            return F.linear(u, op.weight)
        return F.conv_transpose2d(u, op.weight, None, op.stride, op.padding, op.output_padding,
                                  op.groups, op.dilation)

    def weight_grad(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """∂⟨c, W·u⟩/∂W."""
        op = self.op
        if isinstance(op, (StackedLinear, StackedConvTranspose2d)):
            return op.weight_grad(c, u)
        if isinstance(op, nn.Linear):
            return c.reshape(-1, c.shape[-1]).T @ u.reshape(-1, u.shape[-1])
        return torch.ops.aten.convolution_backward(
            c, u, op.weight, None, op.stride, op.padding, op.dilation, True, op.output_padding,
            op.groups, [False, True, False])[1]

    def grad(self, layer: _Layer, lifted) -> torch.Tensor:
        """∂loss/∂W for one iteration; draws dx then dy from the layer's generator. ``lifted(y, x)``
        maps the block's output to what g reads (the engine's ``lifted``)."""
        sigma, batch = layer.sigma, layer.x.shape[0] // len(layer.generators)  # each run's batch
        noise_x = _noise(layer.x, layer.generators)  # dx = σ·noise_x, never materialised
        x_noisy = torch.add(layer.x, noise_x, alpha=sigma)
        y_noisy, ctx_noisy = self.forward_ctx(x_noisy)
        y_noisy = lifted(y_noisy, x_noisy)
        y_shifted = torch.add(layer.y, _noise(layer.y, layer.generators), alpha=sigma)
        u1 = self.apply_pre(y_noisy, ctx_noisy).sub_(self.p0)
        u2 = self.apply_pre(y_shifted, layer.ctx).sub_(self.p0)
        v = self.product(u2)
        # the scalars of c1 = −2/B·dx and c2 = 2/B·v are applied to the (small) weight gradients
        grad = self.weight_grad(noise_x.reshape(v.shape), u1).mul_(-2.0 * sigma / batch)
        return grad.add_(self.weight_grad(v, u2), alpha=2.0 / batch)


def _commute(ops: list[nn.Module], first: tuple, second) -> list[nn.Module]:
    """``ops`` with every adjacent (a ∈ first, b ∈ second) pair swapped to (b, a)."""
    ops = list(ops)
    k = 0
    while k < len(ops) - 1:
        if isinstance(ops[k], first) and isinstance(ops[k + 1], second):
            ops[k], ops[k + 1] = ops[k + 1], ops[k]
            k += 2
        else:
            k += 1
    return ops


@register_algorithm("scaling_dtp", "l_drl")
class ScalingDTP(TargetPropagation):
    def __init__(self, cfg, network, epochs):
        if cfg.feedback != "learned":
            raise ConfigError("algorithm.feedback: L-DRL trains its feedback; use learned")
        super().__init__(cfg, network, epochs)
        n = len(self.feedback_blocks)
        ks = per_layer(cfg.feedback_iterations, n, "algorithm.feedback_iterations")
        if any(k != int(k) for k in ks):
            raise ConfigError(f"algorithm.feedback_iterations: must be integers, got {cfg.feedback_iterations}")
        self.iterations = dict(zip(self.feedback_blocks, (int(k) for k in ks)))
        if "feedback" in self.optimizers:
            # the engine's optimizer, rebuilt with the multi-tensor (foreach) implementation; one
            # parameter group per feedback layer, in forward order, so a step over a subset of
            # layers (the others' grads None) leaves the others and their momentum untouched
            lrs = per_layer(cfg.feedback_optimizer.lr, n, "algorithm.feedback_optimizer.lr", allow_zero=False)
            groups = [{"params": list(self.feedback[str(i)].parameters()), "lr": lr}
                      for i, lr in zip(self.feedback_blocks, lrs)]
            self.add_optimizer("feedback", build_optimizer(cfg.feedback_optimizer, groups, lr=lrs[0],
                                                           foreach=True), cfg.feedback_optimizer)

    # ------------------------------------------------------------ the L-DRL loss, literally
    def ldrl_loss(self, layer: _Layer) -> torch.Tensor:
        """One sample of the L-DRL feedback loss of one layer (with a graph to g's parameters)."""
        i, x, y, ctx, sigma = layer.block, layer.x, layer.y, layer.ctx, layer.sigma
        g = self.feedback[str(i)]
        r = g(y, ctx)  # clean indices
        if self.cfg.reference == "detached":  # FW-DTP's code: r is a constant of the loss
            r = r.detach()
        dx = sigma * _noise(x, layer.generators)
        with torch.no_grad():
            y_noise, ctx_noise = self.network.blocks[i].forward_ctx(x + dx)
            y_noise = self.lifted(i, y_noise, x + dx)
        dr = g(y_noise, ctx_noise) - r  # the noisy pass's indices
        dy = sigma * _noise(y, layer.generators)
        dr_y = g(y + dy, ctx) - r  # clean indices
        runs = len(layer.generators)
        batch = x.shape[0] // runs  # each run's batch; K runs: one loss per run
        return -2.0 * per_run_sum(dx * dr, runs) / batch + per_run_sum(dr_y.pow(2), runs) / batch

    # ------------------------------------------------------------ feedback training
    def prepare_layers(self, x: torch.Tensor, forward: Forward | None = None) -> list[_Layer]:
        """Step 1 (the forward pass, unless given) and each layer's generator, seeded from the
        global stream."""
        if forward is None:
            with torch.no_grad():
                forward = self.network.activations_ctx(x, detach_inputs=True)
        hs, ctxs = [h.detach() for h in forward[0]], forward[1]
        seeds = self.random_seeds(len(self.feedback_blocks))  # per run, one per layer
        layers = []
        for n, i in enumerate(self.feedback_blocks):
            if self.iterations[i] == 0:
                continue
            generators = [torch.Generator(device=x.device).manual_seed(run_seeds[n]) for run_seeds in seeds]
            with torch.no_grad():
                y = self.lifted(i, hs[i + 1], hs[i])
            layers.append(_Layer(i, self.iterations[i], self.noise[i], hs[i].detach(), y.detach(),
                                 ctxs[i], generators))
        return layers

    def train_feedback(self, x: torch.Tensor, y: torch.Tensor, forward: Forward | None = None) -> None:
        optimizer = self.optimizers.get("feedback")
        if optimizer is None:
            return
        layers = self.prepare_layers(x, forward)
        if self.cfg.lockstep and self.cfg.reference == "attached":  # the closed forms differentiate r
            self._train_lockstep(layers, optimizer)
        else:
            self._train_per_layer(layers, optimizer)

    def _train_per_layer(self, layers: list[_Layer], optimizer: torch.optim.Optimizer) -> None:
        """The reference: each layer's K_i iterations in turn."""
        for layer in layers:
            for _ in range(layer.iterations):
                optimizer.zero_grad(set_to_none=True)
                self.ldrl_loss(layer).sum().backward()
                optimizer.step()

    def _train_lockstep(self, layers: list[_Layer], optimizer: torch.optim.Optimizer) -> None:
        for layer in layers:
            split = _ClosedForm.split(self.feedback[str(layer.block)])
            layer.fast = (_ClosedForm(*split, self.network.blocks[layer.block], layer)
                          if split is not None else None)
        bias_zeros = {}
        for k in range(max((layer.iterations for layer in layers), default=0)):
            optimizer.zero_grad(set_to_none=True)
            literal = None
            for layer in layers:
                if layer.iterations <= k:
                    continue  # finished: grads stay None, so the step skips it
                if layer.fast is None:
                    loss = self.ldrl_loss(layer)
                    literal = loss if literal is None else literal + loss
                    continue
                with torch.no_grad():
                    self._closed_form_step(layer, bias_zeros)
            if literal is not None:
                literal.sum().backward()
            optimizer.step()

    def _closed_form_step(self, layer: _Layer, bias_zeros: dict) -> None:
        fast, i = layer.fast, layer.block
        weight = fast.op.weight
        weight.grad = fast.grad(layer, lambda y, x: self.lifted(i, y, x)).to(weight.dtype)
        bias = fast.op.bias
        if bias is not None and bias.requires_grad:
            if i not in bias_zeros:
                bias_zeros[i] = torch.zeros_like(bias)
            bias.grad = bias_zeros[i]  # exactly zero: a step keeps its momentum state consistent


def _noise(like: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``like``; run k's rows from ``generators[k]``."""
    if len(generators) == 1:
        return torch.randn(like.shape, generator=generators[0], device=like.device, dtype=like.dtype)
    chunk = (like.shape[0] // len(generators), *like.shape[1:])
    return torch.cat([torch.randn(chunk, generator=g, device=like.device, dtype=like.dtype) for g in generators])
