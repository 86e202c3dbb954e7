"""Algorithm config schemas (pure dataclasses, importable without torch).

Each algorithm registers its schema here as ``algorithm/<name>_schema``; ``conf/algorithm/<name>.yaml``
extends it and sets the defaults a user sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from ..config import OptimizerConfig, check, check_choice, check_number_or_list, check_positive, register_schema


@dataclass
class AlgorithmConfig:
    """Fields every algorithm has: a name and the optimizer of the forward weights."""

    # the implementation that runs (set by the option file; an option may reuse one: dtp_shibuya_code runs dtp)
    name: str = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # the forward weights' optimizer

    def validate(self, key: str = "algorithm") -> None:
        self.optimizer.validate(f"{key}.optimizer")


@dataclass
class BPConfig(AlgorithmConfig):
    name: str = "bp"


register_schema("algorithm", "bp", BPConfig)


# ---------------------------------------------------------------- target propagation family
FIRST_TARGETS = ("penultimate_gradient", "output_gradient", "label")
PROPAGATIONS = ("difference", "plain")
FEEDBACK_KINDS = ("learned", "fixed_random", "jacobian_transpose")
INVERSE_LOSSES = ("noise_preserving", "denoising")
REDUCTIONS = ("mean", "batch_mean", "sum")
TP_SCHEDULES = ("parallel", "alternating")
FEEDBACK_INITS = ("xavier_uniform", "xavier_normal", "orthogonal", "kaiming_uniform", "kaiming_normal",
                  "uniform", "default")


@dataclass
class TargetPropConfig(AlgorithmConfig):
    """The layer-wise target-propagation engine (tp, dtp, sdtp, ao_sdtp and their descendants).

    Every convention on which the papers' code differs is a field here; the presets in
    conf/algorithm and conf/experiment set them per paper.
    """

    name: str = "dtp"
    schedule: str = "parallel"  # parallel: feedback step then forward step on every minibatch;
    #                             alternating: a full epoch of feedback training before each forward epoch
    # ---- the first target
    first_target: str = "penultimate_gradient"  # penultimate_gradient (Lee et al.): ĥ_{L-1} = h_{L-1} − α ∂L/∂h_{L-1};
    #   output_gradient (FW-DTP, L-DRL, DRL): ĥ_L = h_L − β ∂L/∂h_L on the logits;
    #   label (SDTP, AO-SDTP): ĥ_L = the one-hot label (no gradient anywhere)
    target_step: float = 0.1  # α (penultimate_gradient) or β (output_gradient)
    target_loss_reduction: str = "mean"  # L in the first target: mean = batch-mean CE (Lee's code) or
    #                                      sum = summed CE (a per-sample step; FW-DTP, L-DRL)
    # ---- sending targets down
    propagation: str = "difference"  # difference: ĥ_l = h_l + g(ĥ_{l+1}) − g(h_{l+1}); plain (TP): g(ĥ_{l+1})
    feedback: str = "learned"  # learned | fixed_random (FW-DTP) | jacobian_transpose (exact VJP of the
    #                            block above: TP becomes BP, Bartunov et al. appendix 5.6)
    feedback_placement: str = "output"  # output: g(h) = σ(V h + c) (Lee, Bartunov, FW-DTP);
    #                                     mirror: ops reversed, activation first (Ernoult's invert())
    feedback_activation: str = "same"  # g's output nonlinearity (placement=output): same = that of
    #                                    the block below; or tanh, relu, ..., linear
    feedback_bias: bool = True  # whether each feedback function g has a bias
    feedback_init: str = "xavier_uniform"  # of g's weights: xavier_uniform, xavier_normal, orthogonal,
    #   kaiming_uniform, kaiming_normal, uniform (U(−gain, gain)) or default (PyTorch's)
    feedback_init_gain: float = 1.0  # that init's gain (uniform: the bound a of U(−a, a))
    # ---- training the feedback
    inverse_loss: str = "noise_preserving"  # noise_preserving: ‖g(f(h+ε)) − (h+ε)‖² (Lee; Bartunov's DTP)
    #                                         or denoising: ‖g(f(h+ε)) − h‖² (Bartunov's SDTP / AO-SDTP)
    noise: Any = 0.1  # σ of ε ~ N(0, σ²): one value, or one per layer that has a feedback function
    # the feedback weights' optimizer (lr: one per feedback layer allowed); unused when nothing is learned
    feedback_optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    feedback_steps: int = 1  # inverse-loss updates per minibatch
    feedback_pretrain_epochs: int = 0  # epochs of feedback-only training before the first forward epoch
    extra_feedback_epochs: int = 0  # feedback-only epochs after each forward epoch
    # ---- training the forward weights
    local_loss_reduction: str = "batch_mean"  # of ‖h_l − ĥ_l‖²: batch_mean = sum over features, mean
    #                                           over batch; mean = over both; sum = over both
    local_loss_scale: float = 0.5  # 0.5 gives ½‖h − ĥ‖² (gradient h − ĥ)
    feedback_loss_reduction: str = "batch_mean"  # of the feedback (inverse) loss: as local_loss_reduction
    forward_lr_divide_by_step: bool = False  # Meulemans et al.: forward lr / β keeps the step size
    #                                          independent of the target step
    parallel_order: str = "feedback_first"  # feedback_first (Bartunov, FW-DTP, L-DRL): targets use the
    #   feedback updated on this batch; targets_first (Meulemans' code): targets and forward gradients
    #   are computed before the feedback step, the forward step comes after it
    target_batch_norm: bool = False  # FW-DTP's BN variant: batch-normalise every propagated target
    # ---- AO-SDTP
    aux_output_size: int = 0  # number of auxiliary outputs z: fixed random features of h_{L-1} (0 = none)
    aux_activation: str = "tanh"  # z's nonlinearity: tanh, relu, leaky_relu, elu, sigmoid or linear
    aux_init: str = "xavier_uniform"  # of the fixed auxiliary weights (Glorot, as Bartunov et al.; default = PyTorch's)

    def validate(self, key: str = "algorithm") -> None:
        super().validate(key)
        check_choice(self.schedule, f"{key}.schedule", TP_SCHEDULES)
        check_choice(self.first_target, f"{key}.first_target", FIRST_TARGETS)
        check_choice(self.target_loss_reduction, f"{key}.target_loss_reduction", ("mean", "sum"))
        check_choice(self.propagation, f"{key}.propagation", PROPAGATIONS)
        check_choice(self.feedback, f"{key}.feedback", FEEDBACK_KINDS)
        check_choice(self.feedback_placement, f"{key}.feedback_placement", ("output", "mirror"))
        check_choice(self.inverse_loss, f"{key}.inverse_loss", INVERSE_LOSSES)
        check_choice(self.parallel_order, f"{key}.parallel_order", ("feedback_first", "targets_first"))
        check_choice(self.feedback_init, f"{key}.feedback_init", FEEDBACK_INITS)
        check_choice(self.aux_init, f"{key}.aux_init", FEEDBACK_INITS)
        check_choice(self.local_loss_reduction, f"{key}.local_loss_reduction", REDUCTIONS)
        check_choice(self.feedback_loss_reduction, f"{key}.feedback_loss_reduction", REDUCTIONS)
        check_positive(self.target_step, f"{key}.target_step")
        check_positive(self.local_loss_scale, f"{key}.local_loss_scale")
        check_positive(self.feedback_init_gain, f"{key}.feedback_init_gain")
        # DRL and L-DRL divide by σ² or need the perturbation itself; DTP's inverse loss works without noise
        check_number_or_list(self.noise, f"{key}.noise", allow_zero=self.name not in ("drl", "scaling_dtp", "l_drl"))
        check_positive(self.feedback_steps, f"{key}.feedback_steps")
        check_positive(self.feedback_pretrain_epochs, f"{key}.feedback_pretrain_epochs", allow_zero=True)
        check_positive(self.extra_feedback_epochs, f"{key}.extra_feedback_epochs", allow_zero=True)
        check_positive(self.aux_output_size, f"{key}.aux_output_size", allow_zero=True)
        check(self.aux_output_size == 0 or self.first_target == "label", f"{key}.aux_output_size",
              "auxiliary outputs are part of AO-SDTP and need first_target=label")
        check(not (self.propagation == "plain" and self.feedback == "jacobian_transpose"), f"{key}.propagation",
              "jacobian_transpose sends the difference ĥ − h down (the VJP); use propagation=difference")
        check(not (self.first_target == "label" and self.feedback == "jacobian_transpose"),
              f"{key}.feedback", "jacobian_transpose needs a gradient-based first target")
        self.feedback_optimizer.validate(f"{key}.feedback_optimizer")


for _name in ("tp", "dtp", "sdtp", "ao_sdtp", "fw_dtp"):
    register_schema("algorithm", _name, TargetPropConfig)

DRL_REGRESSION_TARGETS = ("noisy", "clean")


@dataclass
class DRLConfig(TargetPropConfig):
    """DRL (Meulemans et al. 2020): the engine with the difference reconstruction loss.

    regression_target: what the reconstruction of a corrupted h_i + σε is compared with. noisy
      (Meulemans et al.'s definition and code) or clean h_i (FW-DTP's released DRL baseline: a
      different quantity, kept only to reproduce that code's row; algorithm=drl_shibuya_code)."""

    name: str = "drl"
    regression_target: str = "noisy"  # what the reconstruction of h + σε is compared with: noisy or clean h

    def validate(self, key: str = "algorithm") -> None:
        super().validate(key)
        check_choice(self.regression_target, f"{key}.regression_target", DRL_REGRESSION_TARGETS)


register_schema("algorithm", "drl", DRLConfig)


# ---------------------------------------------------------------- feedback alignment (fa, dfa)
FEEDBACK_ALIGNMENT_INITS = ("same_as_forward", "xavier_uniform", "xavier_normal", "orthogonal",
                            "kaiming_uniform", "kaiming_normal", "default")


@dataclass
class FeedbackAlignmentConfig(AlgorithmConfig):
    """Fixed random feedback: FA (B_l of W_l's shape replaces W_lᵀ) and DFA (B_l, n_classes × |h_l|,
    sends the output error straight to block l). The forward weights use ``optimizer`` as in bp.

    feedback_init: how B_l is drawn; same_as_forward = the scheme (and gain) of block l's forward
      weights, with B_l's own fans (FA: W_l's; DFA: n_classes → |h_l|), or one of the arch inits.
    feedback_init_gain: multiplies that gain (the scale of the random feedback)."""

    name: str = "fa"
    feedback_init: str = "same_as_forward"  # how B_l is drawn: same_as_forward (block l's forward scheme
    #   and gain, with B_l's fans) or xavier_uniform, xavier_normal, orthogonal, kaiming_*, default
    feedback_init_gain: float = 1.0  # multiplies that gain: the scale of the random feedback

    def validate(self, key: str = "algorithm") -> None:
        super().validate(key)
        check_choice(self.feedback_init, f"{key}.feedback_init", FEEDBACK_ALIGNMENT_INITS)
        check_positive(self.feedback_init_gain, f"{key}.feedback_init_gain")


register_schema("algorithm", "fa", FeedbackAlignmentConfig)
register_schema("algorithm", "dfa", FeedbackAlignmentConfig)


# ================================================================ scaling_dtp / l_drl
# (Ernoult et al. 2022, "learning backprop targets"; owned by dtp_bench/algorithms/scaling_dtp.py)
LDRL_REFERENCES = ("attached", "detached")


@dataclass
class ScalingDTPConfig(TargetPropConfig):
    """L-DRL: the target-propagation engine with Ernoult et al.'s feedback loss and schedule.

    Per minibatch: ``feedback_iterations`` (K_i) L-DRL updates of each feedback function on the
    batch's fixed activations, then one forward step on Σ_i ½‖s_i − t_i‖² with
    t_L = logits − β ∂CE_sum/∂logits and t_i = s_i + g_i(t_{i+1}) − g_i(s_{i+1}).
    Per-layer lists (``noise``, ``feedback_iterations``, ``feedback_optimizer.lr``) are in forward
    order over the blocks that have feedback, i.e. blocks 1..L-1 (block 0 has none).

    feedback_iterations: K_i, one int or one per feedback layer (0 = that layer is never trained).
    lockstep: True = the fast implementation (all layers advance together, closed-form gradients of
      the weight op); False = the plain per-layer loop, kept as the reference. Both give the same
      result for the same random stream (up to rounding)."""

    name: str = "scaling_dtp"
    first_target: str = "output_gradient"
    target_step: float = 0.4655
    target_loss_reduction: str = "sum"
    propagation: str = "difference"
    feedback_placement: str = "mirror"
    feedback_init: str = "default"
    local_loss_reduction: str = "batch_mean"
    local_loss_scale: float = 0.5
    feedback_iterations: Any = 20  # K_i: L-DRL updates of each feedback layer per minibatch; one int or
    #   one per feedback layer (0 = that layer is never trained)
    lockstep: bool = True  # true: all layers advance together, closed-form gradients (fast); false: the plain
    #   per-layer loop, the reference (same result); reference=detached always uses the loop
    reference: str = "attached"  # r = g(s_{i+1}) in both L-DRL terms: attached (Ernoult et al.'s code: the
    #   loss is differentiated through r too) or detached (FW-DTP's released L-DRL; algorithm=l_drl_shibuya_code)

    def validate(self, key: str = "algorithm") -> None:
        from omegaconf import OmegaConf

        super().validate(key)
        check(self.feedback == "learned", f"{key}.feedback", "L-DRL trains its feedback: use learned")
        check(self.inverse_loss == "noise_preserving", f"{key}.inverse_loss",
              "is not used by L-DRL (its feedback loss is fixed); leave it at noise_preserving")
        check(self.schedule == "parallel", f"{key}.schedule",
              "L-DRL trains feedback on every minibatch before the forward step: use parallel")
        check(self.feedback_steps == 1, f"{key}.feedback_steps",
              "is not used by L-DRL; its feedback updates per minibatch are feedback_iterations")
        check(self.feedback_loss_reduction == "batch_mean", f"{key}.feedback_loss_reduction",
              "is not used by L-DRL (its loss is a batch mean by definition); leave it at batch_mean")
        check_choice(self.reference, f"{key}.reference", LDRL_REFERENCES)
        items = self.feedback_iterations
        items = list(items) if isinstance(items, (list, tuple)) or OmegaConf.is_list(items) else [items]
        check(len(items) > 0 and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in items),
              f"{key}.feedback_iterations", f"must be an int >= 0 or a list of them, got {self.feedback_iterations!r}")


register_schema("algorithm", "scaling_dtp", ScalingDTPConfig)
register_schema("algorithm", "l_drl", ScalingDTPConfig)
