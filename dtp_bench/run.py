"""One Hydra job: validate, train, report — and turn every failure into a clear message.

A single run exits non-zero on a bad config, missing data or a crash. In a multirun sweep the
job records ``status: failed`` in its summary.json and returns, so the other jobs go on.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import ConfigError, validate
from .data import DataError
from .trainer import SUMMARY, Trainer, write_json_atomic

FAILED_OBJECTIVE = 100.0  # error % reported to sweepers for failed or diverged jobs


def _hydra_context() -> tuple[Path, dict, bool]:
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        return Path(hc.runtime.output_dir), choices, hc.mode == RunMode.MULTIRUN
    return Path.cwd(), {}, False


def run(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Train ``cfg``; returns the objective a sweeper minimises (validation error when a split is
    held out, else test error; FAILED_OBJECTIVE for failed or diverged runs)."""
    hydra_dir, choices, multirun = _hydra_context()
    run_dir = Path(run_dir or hydra_dir)
    trainer = None
    try:
        typed = validate(cfg)
        trainer = Trainer(cfg, typed, run_dir, choices)
        summary = trainer.fit()
    except (ConfigError, DataError) as exc:
        kind = "config error" if isinstance(exc, ConfigError) else "data error"
        return _fail(run_dir, choices, f"{kind}: {exc}", multirun, exit_code=2)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bug or an out-of-memory: keep the traceback, let the sweep go on
        detail = traceback.format_exc()
        if trainer is not None:
            summary = trainer.write_summary("failed")
            summary["error"] = detail
            write_json_atomic(run_dir / SUMMARY, summary)
        else:
            write_json_atomic(run_dir / SUMMARY, {"status": "failed", "error": detail, "choices": choices})
        if not multirun:
            raise
        print(f"job failed ({exc.__class__.__name__}: {exc}); details in {run_dir / SUMMARY}", file=sys.stderr)
        return FAILED_OBJECTIVE

    if summary["status"] != "completed":
        print(f"{summary['status']} at epoch {summary['diverged_epoch']}; run directory {run_dir}")
        return FAILED_OBJECTIVE
    print(f"final test error: {summary['final_test_error']:.2f}% "
          f"(best {summary['best_test_error']:.2f}%, train {summary['final_train_error']:.2f}%, "
          f"{summary['epochs_completed']} epochs, {summary['total_seconds']:.1f} s) — {run_dir}")
    objective = summary["final_val_error"]
    return summary["final_test_error"] if objective is None else objective


def _fail(run_dir: Path, choices: dict, message: str, multirun: bool, exit_code: int) -> float:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / SUMMARY, {"status": "failed", "error": message, "choices": choices})
    print(message, file=sys.stderr)
    if not multirun:
        sys.exit(exit_code)
    return FAILED_OBJECTIVE
