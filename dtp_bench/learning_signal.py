"""Learning signal: does each forward block actually move?

A rule whose hidden updates carry no usable signal still trains its output layer and reaches a
plausible error, so the trainer measures, per forward block and epoch, at almost no cost:

* ``update_ratio/block<i>``: ‖θ_end − θ_start‖ / ‖θ_start‖ over the block's parameters (weights
  and biases) across the epoch, from one copy of the forward weights per epoch (no per-step work).
* ``step_fraction/block<i>``: for Adam (and RMSprop), the mean over the block's elements of
  √v̂ / (√v̂ + ε) in the optimizer state at the epoch's end: the fraction of its nominal step
  (the ε-free lr·m̂/√v̂) that the block receives. Near 1: ε is negligible; ≪ 1: the block's
  gradients are so small that ε, not the gradient scale, sets the step (√v̂ ≈ fraction·ε).

A hidden block (every block but the output block) that is not in ``trainer.frozen_blocks`` counts
as *starved* when, in every epoch so far, its update ratio stayed below
``diagnostics.starved_update_ratio`` or its step fraction below ``diagnostics.starved_step_fraction``;
the trainer prints one warning line per starved block and lists them in summary.json.
"""
from __future__ import annotations

import math

import torch


class LearningSignal:
    def __init__(self, algorithm, cfg, frozen_blocks: list[int], run: int | None = None):
        """``cfg``: a DiagnosticsConfig (thresholds); ``frozen_blocks``: excluded from warnings;
        ``run``: for batched runs (weights stacked along a run axis), the run measured."""
        self.cfg = cfg
        self.run = run
        self.blocks = list(algorithm.network.blocks)
        self.params = [[p for p in block.parameters() if p.is_floating_point()] for block in self.blocks]
        self.optimizer = algorithm.optimizers.get("forward")
        self.group_of = {}
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    self.group_of[id(p)] = group
        self.watched = [i for i in range(len(self.blocks) - 1) if i not in set(frozen_blocks) and self.params[i]]
        self.start: list[torch.Tensor | None] = []
        self.warned: set[int] = set()

    # ------------------------------------------------------------ per epoch
    @torch.no_grad()
    def begin_epoch(self) -> None:
        self.start = [torch.cat([self._own(p).detach().reshape(-1) for p in params]).clone() if params else None
                      for params in self.params]

    def _own(self, t: torch.Tensor) -> torch.Tensor:
        """This run's slice of a stacked tensor (the tensor itself for a single run)."""
        return t if self.run is None else t[self.run]

    @torch.no_grad()
    def end_epoch(self) -> dict:
        """{"update_ratio": {"block<i>": …}, "step_fraction": {"block<i>": …}} for this epoch
        (step_fraction only for blocks an Adam/RMSprop optimizer has stepped)."""
        ratios, fractions = {}, {}
        for i, (params, start) in enumerate(zip(self.params, self.start)):
            if start is None:
                continue
            now = torch.cat([self._own(p).detach().reshape(-1) for p in params])
            ratios[f"block{i}"] = _finite((now - start).norm().item() / max(start.norm().item(), 1e-30))
            fraction = self.step_fraction(params)
            if fraction is not None:
                fractions[f"block{i}"] = fraction
        out = {"update_ratio": ratios}
        if fractions:
            out["step_fraction"] = fractions
        return out

    def step_fraction(self, params) -> float | None:
        """Mean √v̂/(√v̂ + ε) over the elements of ``params`` (None without second-moment state)."""
        total, count = 0.0, 0
        for p in params:
            state = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
            group = self.group_of.get(id(p))
            if group is None:
                continue
            if "exp_avg_sq" in state:  # Adam: bias-corrected second moment
                step = float(state["step"])
                v = self._own(state["exp_avg_sq"]) / (1.0 - group["betas"][1] ** step)
            elif "square_avg" in state and not group.get("centered", False):  # RMSprop
                v = self._own(state["square_avg"])
            else:
                continue
            root = v.sqrt()
            total += (root / (root + group["eps"])).double().sum().item()
            count += v.numel()
        return _finite(total / count) if count else None

    # ------------------------------------------------------------ over the run
    def starved(self, history: list[dict]) -> dict[int, str]:
        """Watched blocks below a threshold in every epoch of ``history`` (metrics rows), with why."""
        rows = [r["learning_signal"] for r in history if "learning_signal" in r]
        out: dict[int, str] = {}
        if not rows:
            return out
        for i in self.watched:
            key = f"block{i}"
            ratios = [r["update_ratio"].get(key) for r in rows]
            fractions = [r.get("step_fraction", {}).get(key) for r in rows]
            if all(v is not None and v < self.cfg.starved_update_ratio for v in ratios):
                out[i] = (f"its weights moved by at most {max(ratios):.1e} of their norm per epoch "
                          f"(threshold {self.cfg.starved_update_ratio:g})")
            elif all(v is not None and v < self.cfg.starved_step_fraction for v in fractions):
                out[i] = (f"Adam's eps leaves it at most {max(fractions):.1%} of its nominal step "
                          f"(threshold {self.cfg.starved_step_fraction:.0%}): its gradients are far below eps")
        return out

    def new_warnings(self, history: list[dict]) -> list[str]:
        """One line per block newly found starved (each block is reported once per process)."""
        lines = []
        for i, why in self.starved(history).items():
            if i not in self.warned:
                self.warned.add(i)
                lines.append(f"warning: hidden block {i} looks starved after {len(history)} epoch(s): {why}; "
                             f"compare with trainer.frozen_blocks (see README, 'Learning signal')")
        return lines

    def summary(self, history: list[dict]) -> dict:
        """For summary.json: per block the mean and last update ratio and the last step fraction,
        and the starved blocks."""
        rows = [r["learning_signal"] for r in history if "learning_signal" in r]
        if not rows:
            return {}
        keys = sorted({k for r in rows for k in r["update_ratio"]}, key=lambda k: int(k[5:]))
        mean = {}
        for k in keys:
            values = [r["update_ratio"][k] for r in rows if r["update_ratio"].get(k) is not None]
            mean[k] = sum(values) / len(values) if values else None
        out = {"mean_update_ratio": mean, "last_update_ratio": dict(rows[-1]["update_ratio"])}
        if "step_fraction" in rows[-1]:
            out["last_step_fraction"] = dict(rows[-1]["step_fraction"])
        out["starved_blocks"] = sorted(self.starved(history))
        out["thresholds"] = {"update_ratio": self.cfg.starved_update_ratio,
                             "step_fraction": self.cfg.starved_step_fraction}
        return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@torch.no_grad()
def activation_rms(network, x: torch.Tensor, runs: int | None = None) -> list:
    """Root-mean-square of every block's output on ``x`` (one host sync; used twice per run); for
    ``runs`` batched runs (an int, 1 included), one such list per run."""
    hs = network.activations(x)[1:]
    if runs is None:
        return torch.stack([h.float().pow(2).mean().sqrt() for h in hs]).tolist()
    per_run = torch.stack([h.float().unflatten(0, (runs, -1)).flatten(1).pow(2).mean(1).sqrt() for h in hs], 1)
    return per_run.tolist()


def activation_growth(before: list[float], after: list[float], limit: float) -> str | None:
    """A one-line reason when some block's activation RMS grew by more than ``limit`` (or stopped
    being finite) between the two measurements, else None."""
    for i, (a, b) in enumerate(zip(before, after)):
        if not math.isfinite(b) or b > limit * max(a, 1e-12):
            return (f"hidden block {i}'s activation RMS grew from {a:.3g} to {b:.3g} in the first updates "
                    f"(limit {limit:g}x, diagnostics.activation_growth_limit)")
    return None
