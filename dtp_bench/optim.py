"""Optimizers and per-epoch schedules built from ``OptimizerConfig``."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .config import OptimizerConfig


def build_optimizer(cfg: OptimizerConfig, param_groups: Iterable, lr: float | None = None,
                    foreach: bool | None = None) -> torch.optim.Optimizer:
    """``param_groups``: parameters, or dicts with their own ``lr`` (per-layer rates).

    ``lr`` overrides ``cfg.lr`` (which may be a per-layer list handled by the caller)."""
    base_lr = float(cfg.lr) if lr is None else lr
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups, lr=base_lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, foreach=foreach)
    if cfg.name == "adam":
        return torch.optim.Adam(param_groups, lr=base_lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                weight_decay=cfg.weight_decay, foreach=foreach)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=base_lr, alpha=cfg.alpha, eps=cfg.eps,
                                   centered=cfg.centered, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, foreach=foreach)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def build_per_layer_optimizer(cfg: OptimizerConfig, layer_params: Sequence[Sequence[torch.nn.Parameter]],
                              lrs: Sequence[float]) -> torch.optim.Optimizer:
    """One optimizer with a parameter group (and learning rate) per layer; a single group when all
    rates are equal (one fused update instead of one per layer)."""
    if len(set(lrs)) <= 1:
        return build_optimizer(cfg, [p for params in layer_params for p in params], lr=lrs[0] if lrs else None)
    groups = [{"params": list(p), "lr": lr} for p, lr in zip(layer_params, lrs) if len(list(p))]
    return build_optimizer(cfg, groups, lr=lrs[0])


def build_schedule(cfg: OptimizerConfig, optimizer: torch.optim.Optimizer,
                   epochs: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per epoch by the algorithm's ``after_epoch``."""
    if cfg.schedule == "none":
        return None
    if cfg.schedule == "cosine":
        t_max = cfg.cosine_t_max or max(epochs, 1)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=cfg.cosine_eta_min)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.step_gamma)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")
