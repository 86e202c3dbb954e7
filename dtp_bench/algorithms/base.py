"""What the trainer knows of an algorithm, and the registry that maps names to classes.

The trainer only calls ``train_step`` per batch, ``before_epoch`` / ``after_epoch`` around each
epoch and ``predict`` for evaluation. Everything else (targets, feedback networks, optimizers,
schedules) is the algorithm's own business.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..data import BatchFactory
from ..nn.blocks import Network, count_parameters
from ..nn.stacked import by_run
from ..optim import build_optimizer, build_schedule

ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(*names: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Register a class under one or more ``algorithm.name`` values (one engine may serve several)."""
    def decorate(cls: type[Algorithm]) -> type[Algorithm]:
        for name in names:
            ALGORITHMS[name] = cls
        return cls
    return decorate


def build_algorithm(cfg, network: Network, epochs: int) -> Algorithm:
    from . import load_all  # registers every algorithm module

    load_all()
    if cfg.name not in ALGORITHMS:
        raise ValueError(f"algorithm {cfg.name!r} is not implemented; known: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[cfg.name](cfg, network, epochs)


class Algorithm(nn.Module):
    """Base class. Subclasses own their optimizers and any feedback modules (as submodules, so
    ``.to(device)`` and ``state_dict`` cover them)."""

    def __init__(self, cfg, network: Network, epochs: int):
        super().__init__()
        self.cfg = cfg
        self.network = network
        self.epochs = epochs
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, Any] = {}
        # batched runs (dtp_bench/parallel.py): K runs folded into the batch axis, each drawing its
        # noise from its own streams; a single run has runs = 1 and the global random streams
        self.runs = 1
        self.streams = None

    # ------------------------------------------------------------ randomness and losses, per run
    def randn_like(self, t: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``t``, drawn in row-major order whatever ``t``'s strides
        (``torch.randn_like`` follows them: a locally connected layer's permuted output would get
        its noise in another order than a batched run's); with K runs each run's rows come from
        its own stream."""
        if self.streams is None:
            return torch.randn(t.shape, dtype=t.dtype, device=t.device)
        return self.streams.randn_like(t)

    def random_seeds(self, n: int) -> list[list[int]]:
        """``n`` seeds for private generators, one list per run, from each run's CPU stream."""
        if self.streams is None:
            return [torch.randint(0, 2 ** 62, (n,), dtype=torch.int64).tolist()]
        return self.streams.seeds(n)

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The task loss reduced over each run's batch (a scalar for one run, ``(K,)`` for K)."""
        return cross_entropy(logits, y, reduction, self.runs)

    # ------------------------------------------------------------ set-up helpers
    def add_optimizer(self, key: str, optimizer: torch.optim.Optimizer, opt_cfg) -> torch.optim.Optimizer:
        """Register an optimizer (checkpointed, reported in metrics) with its schedule."""
        self.optimizers[key] = optimizer
        schedule = build_schedule(opt_cfg, optimizer, self.epochs)
        if schedule is not None:
            self.schedules[key] = schedule
        return optimizer

    def forward_optimizer(self, params: Iterator[nn.Parameter] | None = None) -> torch.optim.Optimizer:
        params = list(self.network.parameters() if params is None else params)
        if not isinstance(self.cfg.optimizer.lr, (int, float)):
            raise ConfigError(f"algorithm.optimizer.lr: {self.cfg.name} takes one learning rate, got "
                              f"{self.cfg.optimizer.lr}; per-layer lists are for the target-propagation family")
        return self.add_optimizer("forward", build_optimizer(self.cfg.optimizer, params), self.cfg.optimizer)

    def freeze_blocks(self, indices: list[int]) -> None:
        """Never update the forward weights of these blocks: their gradients are dropped before
        every step of the forward optimizer (so neither momentum nor weight decay moves them)."""
        n = len(self.network.blocks)
        if any(i >= n for i in indices):
            raise ConfigError(f"trainer.frozen_blocks: this net has {n} blocks (0..{n - 1}); got {list(indices)}")
        frozen = [p for i in indices for p in self.network.blocks[i].parameters()]

        def drop_gradients(optimizer, args, kwargs):
            for p in frozen:
                p.grad = None

        self.optimizers["forward"].register_step_pre_hook(drop_gradients)

    # ------------------------------------------------------------ what the trainer calls
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update on one batch. Returns (mean task loss, logits), both detached, computed on the
        forward pass the update used (with K runs: the loss per run, ``(K,)``)."""
        optimizer = self.optimizers["forward"]
        optimizer.zero_grad(set_to_none=True)
        loss, logits = self.forward_update(x, y)
        optimizer.step()
        return loss, logits

    def forward_update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this algorithm's update direction for the forward weights into their ``.grad``
        (what the optimizer consumes; diagnostics compare it with backprop's) without stepping.
        Returns (mean task loss, logits), detached."""
        raise NotImplementedError

    def before_epoch(self, epoch: int, batches: BatchFactory) -> None:
        """Called before each forward epoch; ``batches()`` yields a fresh pass over the training
        data (used by schedules that train feedback for a whole epoch first)."""

    def feedback_epochs_before(self, epoch: int) -> int:
        """Feedback-only passes over the training set that ``before_epoch`` makes (cost estimates)."""
        return 0

    def after_epoch(self, epoch: int) -> None:
        for schedule in self.schedules.values():
            schedule.step()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    # ------------------------------------------------------------ reporting and checkpoints
    def learning_rates(self) -> dict[str, float]:
        return {f"lr_{key}": opt.param_groups[0]["lr"] for key, opt in self.optimizers.items()}

    def feedback_parameters(self) -> list[nn.Parameter]:
        """Parameters of trained feedback pathways (fixed random feedback is not counted)."""
        return []

    def parameter_counts(self) -> dict[str, int]:
        return {"forward": count_parameters(self.network.parameters()),
                "feedback": count_parameters(self.feedback_parameters())}

    def training_state(self) -> dict:
        return {"modules": self.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedules": {k: s.state_dict() for k, s in self.schedules.items()}}

    def load_training_state(self, state: dict) -> None:
        self._check_schedule_lengths(state)
        self.load_state_dict(state["modules"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        for key, schedule in self.schedules.items():
            schedule.load_state_dict(state["schedules"][key])

    def _check_schedule_lengths(self, state: dict) -> None:
        """A resumed cosine schedule must span what it was built for."""
        for key, schedule in self.schedules.items():
            saved = state["schedules"][key].get("T_max")
            if saved is not None and saved != getattr(schedule, "T_max", saved):
                raise ConfigError(
                    f"resume: the {key} cosine schedule was built for {saved} epochs and would now span "
                    f"{schedule.T_max}, so its learning rate would climb back up; keep trainer.epochs={saved}, "
                    f"or fix the length with algorithm.{'feedback_' if key == 'feedback' else ''}"
                    f"optimizer.cosine_t_max")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean", runs: int = 1) -> torch.Tensor:
    """Cross-entropy, mean or sum over the batch; with ``runs`` > 1 over each run's rows (``(K,)``)."""
    # float32 at least: bf16 log-softmax loses the small differences targets are made of
    logits = logits.float() if logits.dtype == torch.bfloat16 else logits
    if runs == 1:
        return nn.functional.cross_entropy(logits, y, reduction=reduction)
    per_sample = by_run(nn.functional.cross_entropy(logits, y, reduction="none"), runs)
    return per_sample.mean(1) if reduction == "mean" else per_sample.sum(1)
