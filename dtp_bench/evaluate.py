"""Evaluate a run's checkpoint (the last epoch's ``checkpoint.pt`` or ``best.pt``) on its test,
validation or training split, with the configuration the run was trained with: the run dir's
``.hydra/config.yaml`` when Hydra wrote one, else the configuration stored in the checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from . import schemas  # noqa: F401  (the typed schemas, to rebuild a typed config)
from .config import ConfigError, nest, validate
from .trainer import BEST_CHECKPOINT, CHECKPOINT, CHECKPOINT_HASH, Trainer, file_sha256

SCHEMA_OF = {"trainer": "trainer/default_schema", "dataset": "dataset/base_schema", "logger": "logger/base_schema"}


def typed_config(plain: dict) -> DictConfig:
    """A plain config dict (YAML, or a checkpoint's flat fingerprint unflattened) merged into the
    schemas it was composed from, so ``validate`` accepts it; keys the fingerprint leaves out
    (device, data root, logger, epochs) take their schema defaults."""
    store = ConfigStore.instance()

    def schema(path: str) -> DictConfig:
        group, name = path.split("/")
        return store.load(f"{group}/{name}.yaml").node

    nodes = {group: schema(path) for group, path in SCHEMA_OF.items()}
    for group in ("algorithm", "arch"):
        name = plain.get(group, {}).get("name")
        if name is None:
            raise ConfigError(f"{group}: the stored configuration names no {group}")
        nodes[group] = schema(f"{group}/{name}_schema")
    root = OmegaConf.merge(store.load("config_schema.yaml").node, {k: v for k, v in nodes.items()})
    plain = {k: v for k, v in plain.items() if k not in ("hydra", "resume")}
    plain.setdefault("logger", {}).setdefault("name", "none")
    return OmegaConf.merge(root, plain)


def load_run_config(run_dir: Path, state: dict) -> DictConfig:
    hydra_config = run_dir / ".hydra" / "config.yaml"
    if hydra_config.exists():
        plain = OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=True)
    else:
        plain = nest(json.loads(state["config"]))
    return typed_config(plain)


def load_checkpoint(run_dir: Path, which: str) -> tuple[dict, dict]:
    """(the saved modules, information on the checkpoint); ConfigError with the fix when absent or corrupt."""
    path = run_dir / (BEST_CHECKPOINT if which == "best" else CHECKPOINT)
    if not path.exists():
        fix = ("train with trainer.save_best=true" if which == "best" else
               "a sweep job drops its checkpoint once completed unless trainer.keep_checkpoint=true")
        raise ConfigError(f"checkpoint: no {path.name} in {run_dir} ({fix})")
    hash_file = run_dir / CHECKPOINT_HASH
    if which == "last" and hash_file.exists() and hash_file.read_text().strip() != file_sha256(path):
        raise ConfigError(f"checkpoint: {path} is corrupt (its content does not match {CHECKPOINT_HASH})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"checkpoint: {path} cannot be read ({exc.__class__.__name__})") from exc
    if which == "best":
        return state, {"file": path.name, "epoch": state["epoch"], "selected_by": state["metric"]}
    modules = {"config": state["config"], "modules": state["algorithm"]["modules"]}
    return modules, {"file": path.name, "epoch": state["epochs_completed"]}


def evaluate_checkpoint(run_dir: Path, which: str = "last", split: str = "test", device: str = "cpu",
                        data_root: str | None = None) -> dict:
    run_dir = Path(run_dir)
    state, info = load_checkpoint(run_dir, which)
    cfg = load_run_config(run_dir, state)
    cfg.trainer.device = device
    cfg.trainer.limit_eval_batches = None
    if data_root is not None:
        cfg.dataset.root = data_root
    cfg.dataset.download = False
    typed = validate(cfg)
    if split == "val" and not typed.trainer.val_size:
        raise ConfigError("split: this run held out no validation split (trainer.val_size=0); use --split test")
    trainer = Trainer(cfg, typed, run_dir)
    trainer.algorithm.load_state_dict({k: v.to(trainer.device) for k, v in state["modules"].items()})
    top1, top5 = trainer.evaluate(split)
    return {"run_dir": str(run_dir), **info, "split": split, "error": top1, "top5_error": top5,
            "device": str(trainer.device)}
