"""One Hydra job: validate, train, report — and turn every failure into a clear message.

A single run exits non-zero on a bad config, missing data or a crash. In a multirun sweep the
job records ``status: failed`` in its summary.json and returns, so the other jobs go on.
"""
from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import ConfigError, validate
from .data import DataError
from .menu import schema_choice_problem
from .parallel import ParallelTrainer
from .trainer import CHECKPOINT, CHECKPOINT_HASH, SUMMARY, Trainer, write_json_atomic

LOCK = ".lock"  # held (flock) while a process trains into the run directory
RESUME_ERROR = "resume_error.json"  # why a later attempt on a completed run failed
FAILED_OBJECTIVE = 100.0  # error % reported to sweepers for failed or diverged jobs


def _hydra_context() -> tuple[Path, dict, bool]:
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        return Path(hc.runtime.output_dir), choices, hc.mode == RunMode.MULTIRUN
    return Path.cwd(), {}, False


def _task_overrides() -> list[str]:
    """This job's command-line overrides (written into each batched run's .hydra/overrides.yaml)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Train ``cfg``; returns the objective a sweeper minimises (validation error when a split is
    held out, else test error; FAILED_OBJECTIVE for failed or diverged runs)."""
    hydra_dir, choices, multirun = _hydra_context()
    problem = _sweep_objective_problem(cfg) if multirun else None
    if problem:  # a sweep-level error: stop the whole sweep, not trial after trial
        print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    run_dir = Path(run_dir or hydra_dir)
    with _exclusive(run_dir) as locked:
        if not locked:  # another process owns this folder: touch nothing in it
            message = (f"config error: {run_dir} is in use by another training process (its {LOCK} is held); "
                       f"wait for it to finish, or give this run another folder (hydra.run.dir=...)")
            print(message, file=sys.stderr)
            if not multirun:
                sys.exit(2)
            return FAILED_OBJECTIVE
        with _terminate_as_interrupt():
            return _run_locked(cfg, run_dir, choices, multirun)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption or time limit, `kill`), handled like Ctrl-C."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While a run trains, SIGTERM raises Terminated, so it is recorded like Ctrl-C (signal handlers
    can only be set in the main thread; joblib/loky workers keep their own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _exclusive(run_dir: Path):
    """An exclusive, non-blocking lock on ``run_dir`` for the life of the run (released by the OS
    if the process dies); yields False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield True
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_locked(cfg: DictConfig, run_dir: Path, choices: dict, multirun: bool) -> float:
    finished_before = bool(cfg.get("resume")) and _completed(run_dir)
    if finished_before and not (run_dir / CHECKPOINT).exists():
        done = _finished_summary(run_dir, cfg)
        if done is not None:  # trainer.checkpoint=false: the summary alone says this job is done
            print(f"resume: {run_dir} already holds this run, completed ({done['epochs_completed']} epochs); "
                  f"nothing to train")
            return done["final_test_error"] if done.get("final_val_error") is None else done["final_val_error"]
    trainer = None
    try:
        schema_problem = schema_choice_problem(choices)
        if schema_problem:
            raise ConfigError(schema_problem)
        typed = validate(cfg)
        if typed.trainer.parallel_runs > 1:
            trainer = ParallelTrainer(cfg, typed, run_dir, choices, _task_overrides())
            with contextlib.ExitStack() as stack:
                busy = [r.run_dir for r in trainer.records if not stack.enter_context(_exclusive(r.run_dir))]
                if busy:
                    raise ConfigError(f"{busy[0]} is in use by another training process (its {LOCK} is held); "
                                      f"wait for it to finish, or give this job another folder (hydra.run.dir=...)")
                return _parallel_done(trainer.fit(), trainer, cfg, multirun)
        trainer = Trainer(cfg, typed, run_dir, choices)
        summary = trainer.fit()
    except (ConfigError, DataError) as exc:
        kind = "config error" if isinstance(exc, ConfigError) else "data error"
        # nothing was trained: a completed run already in the folder keeps its summary
        return _fail(run_dir, choices, f"{kind}: {exc}", multirun, exit_code=2, keep_summary=_completed(run_dir))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: record it, say how to continue, stop
        name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT", 130)
        if isinstance(trainer, ParallelTrainer):
            _record_runs(trainer, "interrupted", interrupted_by=name)
        else:
            summary = (trainer.write_summary("interrupted") if trainer is not None
                       else {"status": "interrupted", "choices": choices})
            summary["interrupted_by"] = name
            if not finished_before:  # a completed run's summary stays what it was
                write_json_atomic(run_dir / SUMMARY, summary)
        done = len(trainer.history) if trainer is not None else 0
        saved = (run_dir / CHECKPOINT).exists() or (isinstance(trainer, ParallelTrainer) and all(
            (r.run_dir / CHECKPOINT).exists() for r in trainer.records if r.active))
        print(f"interrupted by {name} after {done} completed epochs; "
              + (f"rerun the same command with resume=true (hydra.run.dir={run_dir}) to continue from the "
                 f"checkpoint of epoch {done}" if saved else "no checkpoint (trainer.checkpoint=false): a rerun "
                 "starts from scratch"), file=sys.stderr)
        raise SystemExit(code) from None
    except Exception as exc:  # a bug or an out-of-memory: keep the traceback, let the sweep go on
        detail = traceback.format_exc()
        nothing_trained = trainer is None or len(trainer.history) == trainer.start_epoch
        where = run_dir / (RESUME_ERROR if finished_before and nothing_trained else SUMMARY)
        try:
            if where.name == RESUME_ERROR:
                write_json_atomic(where, {"status": "failed", "error": detail, "choices": choices})
            elif isinstance(trainer, ParallelTrainer):
                _record_runs(trainer, "failed", error=detail)
            elif trainer is not None:
                summary = trainer.write_summary("failed")
                summary["error"] = detail
                write_json_atomic(run_dir / SUMMARY, summary)
            else:
                write_json_atomic(run_dir / SUMMARY, {"status": "failed", "error": detail, "choices": choices})
        except OSError as write_error:  # a full disk: the small status line, in place, is the last try
            try:
                (run_dir / SUMMARY).write_text(json.dumps({"status": "failed", "error": str(exc)[:500]}) + "\n")
            except OSError:
                print(f"could not record the failure in {run_dir / SUMMARY} ({write_error})", file=sys.stderr)
        if not multirun:
            raise
        print(f"job failed ({exc.__class__.__name__}: {exc}); details in {where}", file=sys.stderr)
        return FAILED_OBJECTIVE

    keep = cfg.trainer.get("keep_checkpoint")
    if summary["status"] in ("completed", "diverged") and not (keep if keep is not None else not multirun):
        # a finished sweep job needs no checkpoint: resume=true skips it by its summary's config_hash
        for name in (CHECKPOINT, CHECKPOINT_HASH):
            (run_dir / name).unlink(missing_ok=True)
    if summary["status"] != "completed":
        print(f"{summary['status']} at epoch {summary['diverged_epoch']}; run directory {run_dir}")
        return FAILED_OBJECTIVE
    print(f"final test error: {_percent(summary['final_test_error'])} "
          f"(best {_percent(summary['best_test_error'])}, train {_percent(summary['final_train_error'])}, "
          f"{summary['epochs_completed']} epochs, {summary['total_seconds']:.1f} s) — {run_dir}")
    objective = summary["final_val_error"]
    return summary["final_test_error"] if objective is None else objective


def _record_runs(trainer: ParallelTrainer, status: str, **extra) -> None:
    """Every still-training run of a batched job gets ``status`` (and ``extra``) in its summary.json."""
    for record in trainer.records:
        if record.active:
            summary = record.write_summary(status)
            write_json_atomic(record.run_dir / SUMMARY, {**summary, **extra})


def _parallel_done(summaries: list[dict], trainer: ParallelTrainer, cfg: DictConfig, multirun: bool) -> float:
    """A batched job's end: checkpoints kept or not as for single runs, one line per run; the
    objective is the mean over its completed runs (FAILED_OBJECTIVE when none completed)."""
    keep = cfg.trainer.get("keep_checkpoint")
    objectives = []
    for record, summary in zip(trainer.records, summaries):
        status = summary.get("status")
        if status in ("completed", "diverged") and not (keep if keep is not None else not multirun):
            for name in (CHECKPOINT, CHECKPOINT_HASH):
                (record.run_dir / name).unlink(missing_ok=True)
        if status != "completed":
            print(f"seed {record.typed.seed}: {status} at epoch {summary.get('diverged_epoch')}; {record.run_dir}")
            continue
        print(f"seed {record.typed.seed}: final test error {_percent(summary['final_test_error'])} "
              f"(best {_percent(summary['best_test_error'])}, {summary['epochs_completed']} epochs) — {record.run_dir}")
        value = summary["final_val_error"]
        objectives.append(summary["final_test_error"] if value is None else value)
    print(f"{len(objectives)} of {len(summaries)} runs completed, {summaries[0].get('total_seconds', 0.0):.1f} s "
          f"batched — {trainer.run_dir}")
    return sum(objectives) / len(objectives) if objectives else FAILED_OBJECTIVE


OPTIMISING_SWEEPERS = ("optuna", "nevergrad", "ax")  # sweepers that minimise what a job returns


def _sweep_objective_problem(cfg: DictConfig) -> str | None:
    """Why this sweep must not run: an optimising sweeper with no validation split would minimise
    the test error (run() returns it when no split is held out)."""
    if not HydraConfig.initialized():  # called outside a Hydra app (tests, a notebook): no sweeper
        return None
    target = str(HydraConfig.get().sweeper.get("_target_", "")).lower()
    if any(name in target for name in OPTIMISING_SWEEPERS) and not cfg.trainer.get("val_size"):
        return ("trainer.val_size: an optimising sweeper minimises the validation error, and this config holds "
                "no validation split out (trainer.val_size=0), so it would tune on the test set; hold one out, "
                "e.g. trainer.val_size=10000")
    return None


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _completed(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a completed run (a sweep rerun with resume=true)."""
    try:
        return json.loads((run_dir / SUMMARY).read_text()).get("status") == "completed"
    except (OSError, ValueError, AttributeError):
        return False


def _finished_summary(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The completed summary in ``run_dir`` when it was written by this config at this length."""
    from .trainer import config_hash

    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
        same = summary.get("config_hash") == config_hash(cfg)
        return summary if same and summary.get("epochs_completed") == cfg.trainer.epochs else None
    except Exception:  # an unreadable summary or a config that does not resolve: train as usual
        return None


def _fail(run_dir: Path, choices: dict, message: str, multirun: bool, exit_code: int,
          keep_summary: bool = False) -> float:
    run_dir.mkdir(parents=True, exist_ok=True)
    # a completed run's results stay in its summary when a later attempt (a resume on a node
    # without the data, say) fails; the failure goes beside it
    write_json_atomic(run_dir / (RESUME_ERROR if keep_summary else SUMMARY),
                      {"status": "failed", "error": message, "choices": choices})
    print(message, file=sys.stderr)
    if not multirun:
        sys.exit(exit_code)
    return FAILED_OBJECTIVE
