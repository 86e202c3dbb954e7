"""The epoch loop: data, model and algorithm in; metrics.jsonl, summary.json and checkpoints out.

The trainer knows nothing of any algorithm beyond ``Algorithm``'s five methods.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import random
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from . import diagnostics  # alignment diagnostics (diagnostics.every_n_steps)
from .algorithms.base import Algorithm, build_algorithm
from .config import ConfigError
from .coverage import outside_papers_notice
from .data import DeviceData
from .geometry import check_geometry
from .learning_signal import LearningSignal, activation_growth, activation_rms
from .nn.blocks import build_network

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_HASH = "checkpoint.pt.sha256"
BEST_CHECKPOINT = "best.pt"
CHECKPOINT_KEYS = {"history", "best_test_error", "elapsed", "epochs_completed", "step", "algorithm",
                   "rng_cpu", "rng_cuda", "rng_data", "config"}
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
WANDB_ID = "wandb_id.txt"  # the W&B run id, so a resume logs to the same W&B run
DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.float32}
TRAIN_LOG = "train.log"  # the name Hydra gives its job log (hydra.job.name = train)
BAR_REFRESH_STEPS = 25  # the progress bar's loss/error refresh (a host sync, only when the bar shows)

log = logging.getLogger("dtp_bench")


def epoch_line(row: dict, epochs: int) -> str:
    """One line per epoch, for the console and train.log."""
    def pct(key):
        return f"{row[key]:.2f}%" if row.get(key) is not None else "n/a"
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4g}",
             f"train error {pct('train_error')}"]
    if "val_error" in row:
        parts.append(f"val error {pct('val_error')}")
    parts.append(f"test error {pct('test_error')}")
    parts += [f"{k} {v:.3g}" for k, v in row.items() if k.startswith("lr_")]
    parts.append(f"{row['epoch_seconds']:.1f} s")
    return ", ".join(parts)


def warn(message: str) -> None:
    """A warning to train.log and the console (printed to stderr when no console handler logs it,
    as outside a Hydra app)."""
    log.warning(message)
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    if not any(type(h) is logging.StreamHandler and h.stream in consoles for h in logging.getLogger().handlers):
        print(message, file=sys.stderr)


@contextlib.contextmanager
def train_log(run_dir: Path):
    """Log records to ``run_dir/train.log`` (and, outside a Hydra app, the console): Hydra's job
    logging already writes that file when the run dir is its output dir; otherwise (a run dir
    passed in, tests, notebooks) a handler is added for the run."""
    path = (run_dir / TRAIN_LOG).resolve()
    handlers = logging.getLogger().handlers + log.handlers
    added = []
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == path for h in handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
        added.append(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    for handler in added:
        log.addHandler(handler)
    try:
        yield
    finally:
        for handler in added:
            log.removeHandler(handler)
            handler.close()


def sweep_job_index() -> int | None:
    """This job's number in a multirun (None in a single run or outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return int(hc.job.num) if hc.mode == RunMode.MULTIRUN and hc.job.get("num") is not None else None


def resolve_device(name: str, job_index: int | None = None) -> torch.device:
    """``auto``: CUDA if there is one, else CPU. In a multirun, ``auto`` spreads the jobs over the
    visible GPUs (job n on cuda:n mod count), so parallel joblib jobs do not all land on cuda:0;
    a Slurm job sees only its own GPUs (CUDA_VISIBLE_DEVICES) and so gets cuda:0 of those."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        return torch.device(f"cuda:{job_index % count}" if job_index is not None and count > 1 else "cuda")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name!r} requested but CUDA is not available; "
                          f"use trainer.device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"trainer.device: {name!r} requested but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s); "
                          f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device: 'mps' requested but not available; use trainer.device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)``, flushed to disk, then renamed over ``path``: a crash leaves the old file or
    the new one, never half of one; a failed write (a full disk) leaves no temp file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=str) + "\n"
    _write_atomic(path, lambda tmp: tmp.write_text(text))


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# what may legitimately change when a run is resumed: its length, its display and logging, and
# where the data files live (a resumed SLURM job may read them from another node's scratch disk)
# and the paper's reference numbers and notes, which only label the run. The device may change too:
# within a type (auto, cuda, cuda:1) bit-identically, across types with a warning (try_resume).
RESUME_MAY_CHANGE = ("resume", "trainer.epochs", "trainer.progress", "trainer.checkpoint", "trainer.device",
                     "trainer.keep_checkpoint", "trainer.save_best", "trainer.compile",
                     "logger", "dataset.root", "dataset.download", "reference",
                     # measurements only: they never change what is trained
                     "diagnostics.learning_signal", "diagnostics.starved_update_ratio",
                     "diagnostics.activation_check_step", "diagnostics.activation_growth_limit",
                     "diagnostics.starved_step_fraction")


def _config_fingerprint(cfg) -> dict:
    """The resolved config as a flat {dotted key: value} dict, minus what may change on resume (a
    listed key and everything under it). Applied to a checkpoint's stored fingerprint as well, so
    checkpoints written while the list was shorter still resume."""
    if not isinstance(cfg, dict):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat: dict = {}

    def walk(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if any(dotted == k or dotted.startswith(k + ".") for k in RESUME_MAY_CHANGE):
                continue
            if isinstance(value, dict) and value:
                walk(value, dotted + ".")
            else:
                flat[dotted] = value

    walk(cfg, "")
    return flat


# keys added after checkpoints existed, with the value that reproduces the old behaviour: a
# checkpoint without the key resumes when the run leaves it there
ADDED_KEYS = {"trainer.frozen_blocks": [], "arch.batch_norm_eps": 1e-5, "trainer.overfit_batches": 0,
              "trainer.tf32": False, "trainer.parallel_runs": 1,
              # an init only: a resumed run takes the auxiliary weights from the checkpoint
              "algorithm.aux_init": "xavier_uniform",
              # variants of FW-DTP's released code (their defaults are the papers' methods)
              "algorithm.regression_target": "noisy", "algorithm.reference": "attached"}


def config_hash(cfg) -> str:
    """A short hash of the resume fingerprint: summary.json carries it, so ``resume=true`` can tell
    a finished run of this config without a checkpoint."""
    import hashlib

    return hashlib.sha256(json.dumps(_config_fingerprint(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _config_changes(stored: str, cfg) -> list[str]:
    """The dotted keys whose values differ between a checkpoint's config (JSON) and ``cfg``."""
    old, new = _config_fingerprint(json.loads(stored)), _config_fingerprint(cfg)  # idempotent on flat dicts
    old = {**{k: v for k, v in ADDED_KEYS.items() if k in new}, **old}
    return sorted(k for k in old.keys() | new.keys() if old.get(k, "<missing>") != new.get(k, "<missing>"))


def training_device(t) -> tuple[torch.device, torch.dtype, Any, torch.dtype]:
    """(device, parameter dtype, autocast context, metric-sum dtype) for a TrainerConfig; sets the
    process-wide switches (determinism, TF32) the config asks for."""
    # set either way: a sweep's jobs share a process, and must not inherit the setting
    torch.use_deterministic_algorithms(t.deterministic, warn_only=True)
    device = resolve_device(t.device, sweep_job_index())
    if device.type == "cuda":
        # set either way (jobs may share a process); off by default: full fp32, as the papers
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        torch.backends.cudnn.allow_tf32 = t.tf32
    if device.type == "mps" and t.precision == "fp64":
        raise ConfigError("trainer.precision: MPS has no float64; use fp32 or bf16")
    # without the weight cache: algorithms update weights inside a training step (feedback
    # before targets, K feedback iterations), and a cached bf16 copy would hide those updates
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
                if t.precision == "bf16" else contextlib.nullcontext())
    # metric sums in float64 where the device has it
    accumulate_dtype = torch.float32 if device.type == "mps" else torch.float64
    return device, DTYPES[t.precision], autocast, accumulate_dtype


class Trainer:
    extra_summary: dict = {}  # what a batched run adds to its summary.json (dtp_bench/parallel.py)
    log_prefix = ""  # before its log lines and warnings ("seed s: " for a batched job's runs)

    def __init__(self, cfg, typed, run_dir: Path, choices: dict | None = None):
        """``cfg``: the composed DictConfig; ``typed``: its validated dataclass tree."""
        self.cfg, self.typed, self.run_dir = cfg, typed, Path(run_dir)
        self.choices = choices or {}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t = typed.trainer
        self.device, self.dtype, self.autocast, self.accumulate_dtype = training_device(t)
        seed_everything(typed.seed)
        self.data = DeviceData(typed.dataset, self.device, self.dtype, t.val_size, typed.seed)
        # shapes and memory checked on the meta device first: a config error, not an OOM kill
        self.geometry = check_geometry(typed.arch, self.data.input_shape, self.data.num_classes,
                                       t.batch_size, self.device, self.dtype, t.eval_batch_size)
        notice = outside_papers_notice(typed.algorithm.name, typed.arch.name, typed.dataset.name)
        if notice:
            warn(notice)
        self.network = build_network(typed.arch, self.data.input_shape, self.data.num_classes)
        self.network.to(device=self.device, dtype=self.dtype)
        self.algorithm: Algorithm = build_algorithm(typed.algorithm, self.network, t.epochs)
        self.algorithm.to(device=self.device, dtype=self.dtype)
        if t.frozen_blocks:
            self.algorithm.freeze_blocks(t.frozen_blocks)
        # the same step, traced and compiled (graph breaks fall back to eager, so the maths is unchanged)
        self.train_step = (self.algorithm.train_step if t.compile == "off"
                           else torch.compile(self.algorithm.train_step, mode=t.compile))
        d = typed.diagnostics
        # only a fresh run's first updates are checked (try_resume clears the probe)
        self._activation_probe = () if d.activation_growth_limit > 0 else None
        self.activation_check: dict | None = None
        self.activation_blowup: str | None = None
        self.learning_signal = (LearningSignal(self.algorithm, typed.diagnostics, t.frozen_blocks)
                                if typed.diagnostics.learning_signal else None)
        self.generator = torch.Generator(device=self.device).manual_seed(typed.seed)
        self._start_records()

    def _start_records(self) -> None:
        """A fresh run's bookkeeping (what checkpoints and summaries are made of)."""
        self.history: list[dict] = []
        self.best_test_error = math.inf
        self.start_epoch = 0
        self.elapsed = 0.0
        self.logger = None
        self.diverged_epoch: int | None = None
        self.step = 0

    # ------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict:
        return {
            "epochs_completed": len(self.history),
            "history": self.history,
            "best_test_error": self.best_test_error,
            "elapsed": self.elapsed,
            "step": self.step,
            "algorithm": self.algorithm.training_state(),
            **self._stream_states(),
            "device_type": self.device.type,
            "threads": torch.get_num_threads(),
            "rng_data": self.generator.get_state(),
            "config": json.dumps(_config_fingerprint(self.cfg), sort_keys=True),
        }

    def _stream_states(self) -> dict:
        """The random streams a checkpoint restores (the data order's is stored beside them)."""
        return {"rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []}

    def _restore_streams(self, state: dict, moved: bool) -> None:
        """Restore the checkpoint's CPU stream, and its CUDA streams unless it moved across device types."""
        torch.set_rng_state(state["rng_cpu"].cpu())
        if state["rng_cuda"] and not moved:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])

    def save_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT
        state = self._checkpoint_state()
        digest = {}

        def write(tmp):
            torch.save(state, tmp)
            digest["sha256"] = file_sha256(tmp)

        _write_atomic(path, write)
        # the payload's hash beside it, checked on load (a flipped byte would otherwise resume silently)
        _write_atomic(path.with_name(CHECKPOINT_HASH), lambda tmp: tmp.write_text(digest["sha256"] + "\n"))

    def try_resume(self) -> bool:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            print(f"resume=true but no {CHECKPOINT} in {self.run_dir}; starting from scratch", file=sys.stderr)
            return False
        fix = "delete it (the run restarts) or set resume=false"
        hash_file = path.with_name(CHECKPOINT_HASH)
        if hash_file.exists() and hash_file.read_text().strip() != file_sha256(path):
            raise ConfigError(f"resume: {path} is corrupt (its content does not match {CHECKPOINT_HASH}); {fix}")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:
            raise ConfigError(f"resume: {path} cannot be read ({exc.__class__.__name__}); {fix}") from exc
        missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else ["all"]
        if missing:
            raise ConfigError(f"resume: {path} lacks {', '.join(missing)} (not a checkpoint of this tool); {fix}")
        if state["epochs_completed"] != len(state["history"]):
            raise ConfigError(f"resume: {path} says {state['epochs_completed']} epochs completed but holds "
                              f"{len(state['history'])} epochs of metrics; {fix}")
        saved_device = state.get("device_type", self.device.type)
        moved = saved_device != self.device.type
        threads = state.get("threads")
        epochs_left = state["epochs_completed"] < self.typed.trainer.epochs
        if self.device.type == "cpu" and epochs_left and threads is not None and threads != torch.get_num_threads():
            # BLAS splits its sums by thread, so the continuation is not bit-identical (still valid)
            warn(f"resume: the checkpoint was written with {threads} CPU threads and this run has "
                 f"{torch.get_num_threads()}; results will differ in the last bits from an uninterrupted run "
                 f"(set OMP_NUM_THREADS={threads} to continue bit-identically)")
        changed = _config_changes(state["config"], self.cfg)
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise ConfigError(f"resume: {path} was written by a different configuration ({shown} differ); "
                              f"use a new output directory or the same overrides as the original run")
        try:
            self.algorithm.load_training_state(state["algorithm"])
        except (KeyError, RuntimeError, ValueError) as exc:  # missing tensors, wrong shapes
            first = str(exc).strip().splitlines()[0][:200]
            raise ConfigError(f"resume: {path} does not fit this model ({first}); {fix}") from exc
        if not self._parameters_finite():
            raise ConfigError(f"resume: {path} holds non-finite weights; {fix}")
        self._restore_streams(state, moved)
        if moved:
            # weights and optimizer state move (map_location); a device's random streams cannot, so the
            # data order restarts from a seed derived from the epoch: a valid continuation, not a
            # bit-identical one
            self.generator.manual_seed(self.typed.seed * 1_000_003 + state["epochs_completed"])
            warn(f"resume: {path} was written on {saved_device} and this run is on {self.device.type}: weights and "
                 f"optimizer state carry over, the random streams (data order, noise) restart from a seed derived "
                 f"from the epoch, so the rest of the run is not bit-identical to an uninterrupted one")
        else:
            self.generator.set_state(state["rng_data"].cpu())
        self.history = list(state["history"])
        self.best_test_error = state["best_test_error"]
        self.elapsed = state["elapsed"]
        self.step = state["step"]
        self.start_epoch = state["epochs_completed"]
        self._activation_probe = None  # the early activation check is for a fresh start only
        # metrics.jsonl is rewritten from the checkpoint so a crash after it was appended does not
        # leave a duplicate line
        with open(self.run_dir / METRICS, "w") as f:
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        return True

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str) -> tuple[float, float | None]:
        """Top-1 and top-5 error (%) on ``split``; top-5 is None when there are 5 classes or fewer."""
        t = self.typed.trainer
        wrong = torch.zeros((), device=self.device)
        wrong_top5 = torch.zeros((), device=self.device)
        n, classes = 0, 0
        with self.autocast:
            for x, y in self.data.eval_batches(split, t.eval_batch_size, t.limit_eval_batches):
                logits = self.algorithm.predict(x)
                classes = logits.shape[1]
                wrong += (logits.argmax(1) != y).sum()
                if classes > 5:
                    wrong_top5 += (logits.topk(5, dim=1).indices != y[:, None]).all(1).sum()
                n += len(y)
        top1 = 100.0 * wrong.item() / max(n, 1)
        return top1, (100.0 * wrong_top5.item() / max(n, 1) if classes > 5 else None)

    # ------------------------------------------------------------ the loop
    def _progress(self, total: int, epoch: int):
        mode = self.typed.trainer.progress
        enabled = mode == "on" or (mode == "auto" and sys.stdout.isatty())
        if not enabled:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {epoch + 1}/{self.typed.trainer.epochs}", leave=False)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_epoch(self, epoch: int) -> dict:
        t = self.typed.trainer
        limit = t.overfit_batches or t.limit_train_batches
        factory = lambda: self.data.train_batches(t.batch_size, self.generator, limit,  # noqa: E731
                                                  fixed=t.overfit_batches > 0)
        self.algorithm.train()
        if self.learning_signal is not None:
            self.learning_signal.begin_epoch()
        start = time.perf_counter()  # feedback-only phases (alternating schedules) count too
        with self.autocast:
            self.algorithm.before_epoch(epoch, factory)
        loss_sum = torch.zeros((), device=self.device, dtype=self.accumulate_dtype)
        wrong = torch.zeros((), device=self.device, dtype=self.accumulate_dtype)
        n = 0
        bar = self._progress(self.data.batches_per_epoch(t.batch_size, limit), epoch)
        # diagnostics: every n steps, on the batch about to be trained on, before its update (same
        # weights as the update), in full precision; their time is not training time
        diag_every, measured, diag_seconds = self.typed.diagnostics.every_n_steps, [], 0.0
        for x, y in factory():
            if diag_every and self.step % diag_every == 0:
                self._synchronize()  # queued training work is training time, not diagnostics time
                diag_start = time.perf_counter()
                measured.append(diagnostics.measure(self.algorithm, x, y, self.typed.diagnostics))
                self._synchronize()
                diag_seconds += time.perf_counter() - diag_start
            if self._activation_probe is not None:
                self._check_activations(x)
            with self.autocast:
                loss, logits = self.train_step(x, y)
            # accumulate on the device: no host synchronisation inside the loop
            loss_sum += loss.to(self.accumulate_dtype) * len(y)
            wrong += (logits.argmax(1) != y).sum()
            n += len(y)
            self.step += 1
            if bar is not None:
                bar.update(1)
                if self.step % BAR_REFRESH_STEPS == 0:  # a host sync, only for an interactive bar
                    bar.set_postfix(loss=f"{loss_sum.item() / max(n, 1):.4f}",
                                    error=f"{100.0 * wrong.item() / max(n, 1):.2f}%", refresh=False)
        self._synchronize()
        seconds = time.perf_counter() - start - diag_seconds  # diagnostics: not training time
        if bar is not None:
            bar.close()
        self.algorithm.eval()
        row = {"train_loss": loss_sum.item() / max(n, 1), "train_error": 100.0 * wrong.item() / max(n, 1),
               "epoch_seconds": seconds, "examples_per_second": n / max(seconds, 1e-9),
               **self.algorithm.learning_rates()}
        if measured:  # {"count", "mean": {key: …}, "last": {key: …}, "seconds"}
            row["diagnostics"] = {**diagnostics.summarize(measured), "seconds": diag_seconds}
        if self.learning_signal is not None:
            row["learning_signal"] = self.learning_signal.end_epoch()
        return row

    def fit(self) -> dict:
        with train_log(self.run_dir):
            log.info("run directory %s, device %s (%s)\nconfig:\n%s", self.run_dir, self.device,
                     hardware_description(self.device), OmegaConf.to_yaml(self.cfg, resolve=True).rstrip())
            return self._fit()

    def _fit(self) -> dict:
        t = self.typed.trainer
        if not (self.typed.resume and self.try_resume()):
            (self.run_dir / METRICS).write_text("")  # a fresh start: no rows of an earlier attempt
            for stale in (CHECKPOINT, CHECKPOINT_HASH, BEST_CHECKPOINT):  # ...and no checkpoint of it either
                (self.run_dir / stale).unlink(missing_ok=True)
        self._open_logger()
        self.write_summary("running")
        for epoch in range(self.start_epoch, t.epochs):
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            self.elapsed += row["epoch_seconds"]  # a diverged epoch's training time counts too
            if self._diverged(row):
                return self.write_summary("diverged")
            test = self.evaluate("test")
            val = self.evaluate("val") if self.data.val_y is not None else None
            self.algorithm.after_epoch(epoch)
            self._record_epoch(row, test, val)
        return self.write_summary("completed")

    def _diverged(self, row: dict) -> bool:
        """Whether the epoch of ``row`` diverged (then recorded as such, without a checkpoint)."""
        # the loss, and the weights: the last update of an epoch may be the one that overflows
        if math.isfinite(row["train_loss"]) and self._parameters_finite():
            return False
        self.diverged_epoch = row["epoch"]
        row["test_error"] = None
        self._record(row, checkpoint=False)
        warn(f"{self.log_prefix}diverged: training loss {row['train_loss']}, or a non-finite weight, "
             f"in epoch {row['epoch']}")
        return True

    def _record_epoch(self, row: dict, test: tuple[float, float | None], val: tuple | None) -> None:
        """A completed epoch: its errors (``evaluate``'s results) into ``row``, best.pt, the metrics
        line, the checkpoint, the log line and any learning-signal warnings."""
        t = self.typed.trainer
        row["test_error"], top5 = test
        if top5 is not None:
            row["test_top5_error"] = top5
        if val is not None:
            row["val_error"] = val[0]
        self.best_test_error = min(self.best_test_error, row["test_error"])
        if t.save_best:
            self._save_best(row)
        self._record(row, checkpoint=t.checkpoint)
        log.info(self.log_prefix + epoch_line(row, t.epochs))
        if self.learning_signal is not None:
            for line in self.learning_signal.new_warnings(self.history):
                warn(self.log_prefix + line)

    def _check_activations(self, x: torch.Tensor) -> None:
        """The early activation check: the first batch's RMS of every hidden block before any update,
        and on the same batch after ``activation_check_step`` updates; a blow-up is warned about
        (the logits are left out: their growth is learning)."""
        d = self.typed.diagnostics
        if self.step == 0:
            self._activation_probe = (x, activation_rms(self.algorithm.network, x))
        elif self.step == d.activation_check_step:
            probe, before = self._activation_probe
            after = activation_rms(self.algorithm.network, probe)
            self.activation_check = {"step": self.step, "rms_before": before, "rms_after": after}
            self.activation_blowup = activation_growth(before[:-1], after[:-1], d.activation_growth_limit)
            self._activation_probe = None
            if self.activation_blowup:  # a warning, not a stop: the NaN check records a real divergence
                warn(f"warning: {self.activation_blowup}; the run may diverge (check the lr and the input "
                     f"normalisation)")

    def _best_metric(self) -> str:
        return "val_error" if self.data.val_y is not None else "test_error"

    def _save_best(self, row: dict) -> None:
        """best.pt: the weights of the epoch with the lowest selection error so far (ties: the first)."""
        metric = self._best_metric()
        earlier = [r[metric] for r in self.history if r.get(metric) is not None]
        if earlier and row[metric] >= min(earlier) and (self.run_dir / BEST_CHECKPOINT).exists():
            return
        state = {"epoch": row["epoch"], "metric": metric, "value": row[metric],
                 "modules": self.algorithm.state_dict(),
                 "config": json.dumps(_config_fingerprint(self.cfg), sort_keys=True)}
        _write_atomic(self.run_dir / BEST_CHECKPOINT, lambda tmp: torch.save(state, tmp))

    def _parameters_finite(self) -> bool:
        params = [p for p in self.algorithm.parameters() if p.is_floating_point()]
        return bool(torch.stack([p.isfinite().all() for p in params]).all()) if params else True

    def _record(self, row: dict, checkpoint: bool) -> None:
        # strict JSON: a non-finite number (a diverged loss) is written as null
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self.history.append(row)
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.logger is not None:
            self.logger.log({k: v for k, v in row.items() if v is not None}, step=row["epoch"])
        if checkpoint:
            self.save_checkpoint()

    def _open_logger(self) -> None:
        cfg = self.typed.logger
        if cfg.name != "wandb":
            return
        import wandb  # optional at run time; installed as a dependency

        # one W&B run per run directory: a resumed run continues it instead of starting another
        id_file = self.run_dir / WANDB_ID
        run_id = id_file.read_text().strip() if self.typed.resume and id_file.exists() else uuid.uuid4().hex[:16]
        id_file.write_text(run_id + "\n")
        self.logger = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, tags=list(cfg.tags),
                                 dir=str(self.run_dir), config=OmegaConf.to_container(self.cfg, resolve=True),
                                 id=run_id, resume="allow")

    # ------------------------------------------------------------ summary
    def write_summary(self, status: str) -> dict:
        last = self.history[-1] if self.history else {}
        completed = [r for r in self.history if r.get("test_error") is not None]
        summary = {
            "status": status,
            "final_test_error": completed[-1]["test_error"] if completed else None,
            "best_test_error": self.best_test_error if math.isfinite(self.best_test_error) else None,
            "final_train_error": last.get("train_error"),
            "final_test_top5_error": completed[-1].get("test_top5_error") if completed else None,
            "final_val_error": completed[-1].get("val_error") if completed else None,
            "best_val_error": min((r["val_error"] for r in completed if "val_error" in r), default=None),
            "epochs_completed": len(completed),
            "epochs_planned": self.typed.trainer.epochs,
            "diverged_epoch": self.diverged_epoch,
            "total_seconds": self.elapsed,
            "choices": self.choices,
            "seed": self.typed.seed,
            "parameters": self.algorithm.parameter_counts(),
            "device": str(self.device),
            "hardware": hardware_description(self.device),
            "host": socket.gethostname(),
            "precision": self.typed.trainer.precision,
            "tf32": bool(self.typed.trainer.tf32 and self.device.type == "cuda"),
            "compile": self.typed.trainer.compile,
            "data_files": self.data.files,
            "torch_version": torch.__version__,
            "command": " ".join(["python"] + sys.argv),
            "config_hash": config_hash(self.cfg),
            **self.extra_summary,
        }
        if self.learning_signal is not None and self.history:
            summary["learning_signal"] = self.learning_signal.summary(self.history)
        metric = self._best_metric()
        scored = [r for r in completed if r.get(metric) is not None]
        if self.typed.trainer.save_best and scored:
            best = min(scored, key=lambda r: r[metric])  # min() keeps the first of equal ones
            summary["best_checkpoint"] = {"file": BEST_CHECKPOINT, "epoch": best["epoch"], "metric": metric,
                                          "value": best[metric]}
        if self.activation_check is not None:
            summary["activation_check"] = {**self.activation_check, "warning": self.activation_blowup}
        ref = self.typed.reference
        if ref is not None:
            summary["reference"] = dict(vars(ref))
        write_json_atomic(self.run_dir / SUMMARY, summary)
        if status != "running" and self.logger is not None:
            self.logger.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            self.logger.finish()
        return summary
