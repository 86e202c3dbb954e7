"""The layer-wise target-propagation engine: tp, dtp, sdtp and ao_sdtp, and the base of fw_dtp,
drl and scaling_dtp.

Indexing. Blocks are numbered 0..L-1; block i maps h_i to h_{i+1} (h_0 is the input, h_L the
logits). The feedback function of block i, g_i, maps h_{i+1}-space back to h_i-space and sends
targets down: ĥ_i = h_i + g_i(ĥ_{i+1}) − g_i(h_{i+1}) (difference correction, DTP) or
ĥ_i = g_i(ĥ_{i+1}) (plain TP). Block 0 needs no feedback (nothing is trained below it).

Per minibatch (schedule=parallel):
  1. forward pass, each block fed a detached copy of its input (updates stay local);
  2. feedback training on the inverse loss (one summed loss; layers are independent);
  3. the first target, then targets sent down through the just-updated feedback;
  4. one forward step on Σ_l local_loss(h_l, ĥ_l) (+ the task loss for the output block when the
     first target sits below it or is the label).
With schedule=alternating, step 2 runs for a whole epoch before each forward epoch instead.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..config import ConfigError, per_layer
from ..nn.blocks import BatchNormNoAffine, FeedbackBlock, init_bias, init_weight, make_activation
from ..nn.stacked import by_run, cat_runs, split_runs
from ..optim import build_per_layer_optimizer
from .base import Algorithm, register_algorithm

Forward = tuple[list[torch.Tensor], list[dict]]  # (h_0 … h_L, each block's forward context)


def squared_error(h: torch.Tensor, target: torch.Tensor, reduction: str, scale: float = 1.0,
                  runs: int = 1) -> torch.Tensor:
    """scale·‖h − target‖² reduced as configured (see TargetPropConfig.local_loss_reduction); with
    ``runs`` > 1 reduced over each run's rows, one value per run."""
    diff = (h - target).float() if h.dtype == torch.bfloat16 else h - target
    if runs > 1:
        per_sample = by_run(diff.pow(2).flatten(1), runs)  # (K, B, features)
        if reduction == "mean":
            return scale * per_sample.flatten(1).mean(1)
        per_sample = per_sample.sum(2)
        return scale * (per_sample.mean(1) if reduction == "batch_mean" else per_sample.sum(1))
    if reduction == "mean":
        return scale * diff.pow(2).mean()
    per_sample = diff.pow(2).flatten(1).sum(1)
    return scale * (per_sample.mean() if reduction == "batch_mean" else per_sample.sum())


@register_algorithm("tp", "dtp", "sdtp", "ao_sdtp", "fw_dtp")
class TargetPropagation(Algorithm):
    def __init__(self, cfg, network, epochs):
        super().__init__(cfg, network, epochs)
        n_blocks = len(network)
        if cfg.first_target == "penultimate_gradient" and n_blocks < 2:
            raise ConfigError("algorithm.first_target: penultimate_gradient needs at least one hidden layer "
                              "(arch.hidden=[]); use output_gradient")
        # level of the first target in [h_0 … h_L] and the blocks whose feedback sends it down
        self.first_level = n_blocks - 1 if cfg.first_target == "penultimate_gradient" else n_blocks
        self.feedback_blocks = list(range(1, self.first_level))
        self.output_on_task_loss = cfg.first_target in ("penultimate_gradient", "label")
        self.noise = dict(zip(self.feedback_blocks,
                              per_layer(cfg.noise, len(self.feedback_blocks), "algorithm.noise")))
        # FW-DTP-BN's targets are normalised as the forward blocks are (the same eps)
        norm = next((m for m in network.modules() if isinstance(m, BatchNormNoAffine)), BatchNormNoAffine())
        self.target_norm = copy.deepcopy(norm)

        self.aux: nn.Linear | None = None
        if cfg.aux_output_size:
            # AO-SDTP's auxiliary outputs z: fixed random features of h_{L-1}, never trained
            top_in = self.network.blocks[-1].weight_op.in_features
            self.aux = nn.Linear(top_in, cfg.aux_output_size, bias=False).requires_grad_(False)
            init_weight(self.aux.weight, cfg.aux_init)  # Glorot in Bartunov et al.'s code (xavier_uniform)
            self.aux_activation = make_activation(cfg.aux_activation)

        self.feedback = nn.ModuleDict({str(i): self.build_feedback(i) for i in self.feedback_blocks}
                                      if cfg.feedback != "jacobian_transpose" else {})
        if cfg.feedback == "fixed_random":
            self.feedback.requires_grad_(False)

        lrs = per_layer(cfg.optimizer.lr, n_blocks, "algorithm.optimizer.lr", allow_zero=False)
        if cfg.forward_lr_divide_by_step:
            lrs = [lr / cfg.target_step for lr in lrs]
        self.add_optimizer("forward", build_per_layer_optimizer(
            cfg.optimizer, [list(b.parameters()) for b in network.blocks], lrs), cfg.optimizer)
        if self.feedback_parameters():
            fb_lrs = per_layer(cfg.feedback_optimizer.lr, len(self.feedback_blocks),
                               "algorithm.feedback_optimizer.lr", allow_zero=False)
            self.add_optimizer("feedback", build_per_layer_optimizer(
                cfg.feedback_optimizer, [list(self.feedback[str(i)].parameters()) for i in self.feedback_blocks],
                fb_lrs), cfg.feedback_optimizer)

    # ------------------------------------------------------------ construction
    def feedback_activation(self, i: int) -> nn.Module | None:
        """g_i's output nonlinearity: by default that of block i-1, so g_i's range is h_i's."""
        if self.cfg.feedback_activation != "same":
            return make_activation(self.cfg.feedback_activation)
        below = self.network.blocks[i - 1]
        activation = copy.deepcopy(below.activation)
        norm = next((op for op in below.ops if isinstance(op, BatchNormNoAffine)), None)
        if norm is not None:  # FW-DTP-BN: g̃(τ) = BN(σ(Bτ)), normalised as the forward block is
            return nn.Sequential(activation, copy.deepcopy(norm))
        return activation

    def build_feedback(self, i: int) -> FeedbackBlock:
        cfg = self.cfg
        block = self.network.blocks[i]
        g = block.make_feedback(cfg.feedback_placement, self.feedback_activation(i), bias=cfg.feedback_bias,
                                init=cfg.feedback_init, gain=cfg.feedback_init_gain)
        if i == len(self.network) - 1 and self.aux is not None:
            # g_L reads [o, z]: widen the input of its weight op (a Linear: the output block is
            # dense in every arch) by the auxiliary units
            index = next(k for k, op in enumerate(g.ops) if op is g.weight_op)
            narrow = g.ops[index]
            wide = nn.Linear(narrow.in_features + self.aux.out_features, narrow.out_features, bias=cfg.feedback_bias)
            init_weight(wide.weight, cfg.feedback_init, cfg.feedback_init_gain)
            init_bias(wide.bias, cfg.feedback_init, wide.in_features)
            g.ops[index] = wide.to(narrow.weight.device, narrow.weight.dtype)
        return g

    def feedback_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.feedback.parameters() if p.requires_grad]

    # ------------------------------------------------------------ the output code fed to g_{L-1}
    def output_code(self, logits: torch.Tensor, h_below: torch.Tensor) -> torch.Tensor:
        """What the top feedback function reads: logits, or (label target) the class distribution,
        with AO-SDTP's auxiliary features appended."""
        if self.cfg.first_target != "label":
            return logits
        # at least float32 (bf16 logits are upcast), float64 kept
        wide = torch.promote_types(logits.dtype, torch.float32)
        return self.with_aux(torch.softmax(logits, dim=1, dtype=wide).to(logits.dtype), h_below)

    def with_aux(self, distribution: torch.Tensor, h_below: torch.Tensor) -> torch.Tensor:
        """[o, z]: a class distribution and, for AO-SDTP, the fixed random features z of h_{L-1}."""
        if self.aux is None:
            return distribution
        return torch.cat([distribution, self.aux_activation(self.aux(h_below.flatten(1)))], dim=1)

    def lifted(self, i: int, h_next: torch.Tensor, h_i: torch.Tensor) -> torch.Tensor:
        """h_{i+1} in the space g_i reads (only the top block's output is transformed)."""
        return self.output_code(h_next, h_i) if i == len(self.network) - 1 else h_next

    # ------------------------------------------------------------ feedback training
    def inverse_loss(self, hs: list[torch.Tensor]) -> torch.Tensor:
        """Σ_i ‖g_i(f_i(h_i + ε)) − (h_i + ε)‖² (noise-preserving) or − h_i (denoising)."""
        cfg = self.cfg
        total = hs[0].new_zeros(())
        for i in self.feedback_blocks:
            h = hs[i].detach()
            noisy = h + self.noise[i] * self.randn_like(h)
            with torch.no_grad():  # the inverse loss trains g_i only
                y, ctx = self.network.blocks[i].forward_ctx(noisy)
                y = self.lifted(i, y, noisy)
            reconstruction = self.feedback[str(i)](y, ctx)
            reference = noisy if cfg.inverse_loss == "noise_preserving" else h
            total = total + squared_error(reconstruction, reference, cfg.feedback_loss_reduction, runs=self.runs)
        return total

    def train_feedback(self, x: torch.Tensor, y: torch.Tensor, forward: Forward | None = None) -> None:
        """One feedback phase on a batch (``feedback_steps`` updates). ``forward``: this batch's
        (activations, contexts) when the caller has them already."""
        optimizer = self.optimizers.get("feedback")
        if optimizer is None:
            return
        if forward is None:
            with torch.no_grad():
                forward = self.network.activations_ctx(x)
        hs, ctxs = [h.detach() for h in forward[0]], forward[1]
        for _ in range(self.cfg.feedback_steps):
            optimizer.zero_grad(set_to_none=True)
            self.feedback_loss(hs, ctxs).sum().backward()  # K runs: one loss per run
            optimizer.step()

    def feedback_loss(self, hs: list[torch.Tensor], ctxs: list[dict]) -> torch.Tensor:
        """The loss the feedback parameters minimise (subclasses replace it: DRL, L-DRL)."""
        return self.inverse_loss(hs)

    def feedback_epochs_before(self, epoch: int) -> int:
        """Feedback-only passes over the training set before forward epoch ``epoch`` (0-based)."""
        cfg = self.cfg
        if "feedback" not in self.optimizers:
            return 0
        n_epochs = cfg.feedback_pretrain_epochs if epoch == 0 else cfg.extra_feedback_epochs
        return n_epochs + (cfg.schedule == "alternating")

    def before_epoch(self, epoch: int, batches) -> None:
        for _ in range(self.feedback_epochs_before(epoch)):
            for x, y in batches():
                self.train_feedback(x, y)

    # ------------------------------------------------------------ targets
    def first_target(self, hs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """ĥ at level ``self.first_level`` (detached)."""
        cfg = self.cfg
        if cfg.first_target == "label":  # argmin of the loss over class distributions
            onehot = nn.functional.one_hot(y, self.network.num_classes).to(hs[-1].dtype)
            return self.with_aux(onehot, hs[-2].detach())  # z is left as it is
        level = self.first_level
        with torch.enable_grad():
            h = hs[level].detach().requires_grad_(True)
            logits = h if level == len(self.network) else self.network.blocks[-1](h)
            loss = self.cross_entropy(logits, y, reduction=cfg.target_loss_reduction)
            (grad,) = torch.autograd.grad(loss.sum(), h)
        return (h - cfg.target_step * grad).detach()

    def propagate(self, i: int, target_next: torch.Tensor, hs: list[torch.Tensor], ctxs: list[dict]) -> torch.Tensor:
        """ĥ_i from ĥ_{i+1} through block i's feedback."""
        h_i, h_next = hs[i].detach(), hs[i + 1].detach()
        if self.cfg.feedback == "jacobian_transpose":
            # exact VJP: ĥ_i − h_i = (∂h_{i+1}/∂h_i)ᵀ (ĥ_{i+1} − h_{i+1})
            with torch.enable_grad():
                inp = h_i.requires_grad_(True)
                out = self.network.blocks[i](inp)
                (delta,) = torch.autograd.grad(out, inp, grad_outputs=target_next - h_next)
            return h_i + delta
        g = self.feedback[str(i)]
        ctx = ctxs[i]
        if self.cfg.propagation == "plain":
            return g(target_next, ctx)
        lifted = self.lifted(i, h_next, h_i)
        if _mixes_samples(g):  # batch statistics inside g: each term is normalised over its own batch
            return h_i + g(target_next, ctx) - g(lifted, ctx)
        # one call for both terms: g is applied per sample, so stack target and activation
        both = g(cat_runs([target_next, lifted], self.runs), _stack_ctx(ctx, self.runs))
        moved, here = split_runs(both, self.runs, len(h_i))
        return h_i + moved - here

    def targets(self, hs: list[torch.Tensor], ctxs: list[dict], y: torch.Tensor) -> dict[int, torch.Tensor]:
        targets = {self.first_level: self.first_target(hs, y)}
        normalise = self.target_norm if self.cfg.target_batch_norm else None
        with torch.no_grad():
            for i in reversed(self.feedback_blocks):
                targets[i] = self.propagate(i, targets[i + 1], hs, ctxs)
                if normalise is not None:
                    targets[i] = normalise(targets[i])
        return targets

    # ------------------------------------------------------------ forward training
    def forward_update(self, x: torch.Tensor, y: torch.Tensor,
                       forward: Forward | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        hs, ctxs = forward if forward is not None else self.network.activations_ctx(x, detach_inputs=True)
        targets = self.targets(hs, ctxs, y)
        logits = hs[-1]
        task_loss = self.cross_entropy(logits, y)
        total = task_loss if self.output_on_task_loss else logits.new_zeros(())
        for level, target in targets.items():
            if level == len(self.network) and self.output_on_task_loss:
                continue  # the label target of SDTP only feeds the feedback chain
            total = total + squared_error(hs[level], target, cfg.local_loss_reduction, cfg.local_loss_scale,
                                          self.runs)
        total.sum().backward()  # K runs: one total per run, each reaching only its own weights
        return task_loss.detach(), logits.detach()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if cfg.schedule == "alternating":
            return super().train_step(x, y)
        # one forward pass serves both phases: feedback training never changes forward weights
        forward = self.network.activations_ctx(x, detach_inputs=True)
        if cfg.parallel_order == "feedback_first":
            self.train_feedback(x, y, forward)
        optimizer = self.optimizers["forward"]
        optimizer.zero_grad(set_to_none=True)
        loss, logits = self.forward_update(x, y, forward)
        if cfg.parallel_order == "targets_first":  # Meulemans et al.'s order
            self.train_feedback(x, y, forward)
        optimizer.step()
        return loss, logits


def _mixes_samples(module: nn.Module) -> bool:
    """Whether ``module``'s output for a sample depends on the other samples of its batch."""
    return any(isinstance(m, (BatchNormNoAffine, nn.modules.batchnorm._BatchNorm)) for m in module.modules())


def _stack_ctx(ctx: dict, runs: int = 1) -> dict:
    """A forward context for a batch stacked twice by ``cat_runs`` (pooling indices repeated)."""
    return {k: cat_runs([v, v], runs) if isinstance(v, torch.Tensor) else v for k, v in ctx.items()}


