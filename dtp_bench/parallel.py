"""Batched runs (``trainer.parallel_runs=K``): the seeds seed … seed+K−1 of one configuration
trained in one process as one model.

How K runs become one model, and why each still is the run it would be alone:

1. Each run is built as it would be alone: the global random streams seeded with its seed, its
   network and algorithm constructed (weights, fixed random feedback, auxiliary features), and
   the random state reached at that point kept as the run's own streams (``RunStreams``).
2. ``stack_algorithms`` folds the K algorithms into the first: every ``nn.Linear`` becomes a
   ``StackedLinear`` holding the K weight matrices, every batch normalisation normalises each run
   by its own statistics, every fixed buffer (FA / DFA feedback matrices) is stacked, and the
   optimizers are pointed at the stacked parameters. The optimizers we use are elementwise
   (SGD, Adam, RMSprop), so one optimizer over stacked tensors is K independent ones.
3. A batch is run-major, ``(K·B, …)``: run k's rows are the batch its own data order (its own
   generator) draws. Losses are reduced per run and summed, so run k's weights get run k's
   gradient; noise is drawn run by run from each run's stream, in the order its single run would.
4. ``RunRecord`` is a ``Trainer`` for one of the runs without a model of its own: it writes the
   run's folder (metrics.jsonl, summary.json, checkpoint.pt in the single-run format, best.pt,
   train.log lines) with the trainer's own code, through ``RunSlice``, a view of run k's slice
   of the stacked state. A run's checkpoint resumes as a single run and vice versa.

What differs from K runs one by one: matrix products are batched (``bmm``), so results agree to
rounding, not bit for bit (tests/test_parallel.py checks the agreement); ``epoch_seconds`` is the
wall time of the batched epoch, shared by all K runs; a run that diverges is recorded as diverged
while the others train on (its rows of the batch keep being computed, and ignored).
"""
from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from .algorithms.base import Algorithm, build_algorithm
from .config import ConfigError
from .coverage import outside_papers_notice
from .data import DeviceData
from .geometry import check_geometry
from .learning_signal import LearningSignal, activation_growth, activation_rms
from .nn.blocks import BatchNormNoAffine, build_network
from .nn.lc import LocallyConnected2d, LocallyConnectedTranspose2d
from .nn.stacked import (
    StackedBatchNorm,
    StackedConv2d,
    StackedConvTranspose2d,
    StackedLinear,
    StackedLocallyConnected2d,
    StackedLocallyConnectedTranspose2d,
    by_run,
)
from .trainer import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    CHECKPOINT_HASH,
    METRICS,
    SUMMARY,
    Trainer,
    config_hash,
    log,
    seed_everything,
    train_log,
    training_device,
    warn,
)

RUN_FOLDER = "seed_{seed}"  # each run's folder inside the batched job's folder


def run_folders(run_dir: Path, seed: int, runs: int) -> list[Path]:
    return [Path(run_dir) / RUN_FOLDER.format(seed=seed + k) for k in range(runs)]


# ---------------------------------------------------------------- random streams
class RunStreams:
    """Each run's random streams: its CPU generator (seeds of private generators) and its device
    generator (noise), both at the state its single run reaches once its model is built."""

    def __init__(self, cpu: list[torch.Generator], device: list[torch.Generator]):
        self.cpu, self.device = cpu, device

    def randn_like(self, t: torch.Tensor) -> torch.Tensor:
        chunk = (t.shape[0] // len(self.device), *t.shape[1:])
        return torch.cat([torch.randn(chunk, generator=g, device=t.device, dtype=t.dtype) for g in self.device])

    def seeds(self, n: int) -> list[list[int]]:
        return [torch.randint(0, 2 ** 62, (n,), dtype=torch.int64, generator=g).tolist() for g in self.cpu]


def _generator(device: torch.device, state: torch.Tensor) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.set_state(state)
    return generator


# ---------------------------------------------------------------- K algorithms as one
STACKED = {nn.Linear: StackedLinear, nn.Conv2d: StackedConv2d, nn.ConvTranspose2d: StackedConvTranspose2d,
           LocallyConnected2d: StackedLocallyConnected2d,
           LocallyConnectedTranspose2d: StackedLocallyConnectedTranspose2d}


def batching_problem(algorithm: Algorithm) -> str | None:
    """Why this algorithm's modules cannot be stacked (None when they can)."""
    for name, module in algorithm.named_modules():
        own = list(module.parameters(recurse=False))
        if own and type(module) not in STACKED:
            return (f"trainer.parallel_runs: {module.__class__.__name__} layers ({name}) cannot be batched yet; "
                    f"batched runs support arch=fc, lc, conv, lenet and vgg; run the seeds one by one instead "
                    f"(python train.py -m seed=0,1,2 ...)")
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and (
                module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)):
            return (f"trainer.parallel_runs: the convolution {name} is grouped, not zero-padded or string-padded; "
                    f"batched runs need plain convolutions; run the seeds one by one instead")
    return None


def stack_algorithms(algorithms: list[Algorithm]) -> Algorithm:
    """Fold K identically built algorithms into the first and return it: afterwards every
    parameter and buffer it holds carries a leading run axis of length K."""
    host, runs = algorithms[0], len(algorithms)
    problem = batching_problem(host)
    if problem:
        raise ConfigError(problem)
    twins = [dict(a.named_modules(remove_duplicate=False)) for a in algorithms]
    replacements: dict[int, nn.Module] = {}
    new_params: dict[int, nn.Parameter] = {}
    buffers_stacked: set[int] = set()
    for name, module in list(host.named_modules(remove_duplicate=False)):
        if not name:
            continue
        if id(module) not in replacements:
            if type(module) in STACKED:
                stacked = STACKED[type(module)]([t[name] for t in twins])
                new_params[id(module.weight)] = stacked.weight
                if module.bias is not None:
                    new_params[id(module.bias)] = stacked.bias
            elif isinstance(module, BatchNormNoAffine):
                stacked = StackedBatchNorm(module.eps, runs)
            else:
                if id(module) not in buffers_stacked:  # a module reachable by two paths is stacked once
                    buffers_stacked.add(id(module))
                    for key in list(module._buffers):  # fixed tensors such as FA / DFA feedback matrices
                        if module._buffers[key] is not None:
                            module._buffers[key] = torch.stack([t[name]._buffers[key] for t in twins])
                continue
            replacements[id(module)] = stacked
        parent_name, _, attr = name.rpartition(".")
        host.get_submodule(parent_name)._modules[attr] = replacements[id(module)]
    for optimizer in host.optimizers.values():
        for group in optimizer.param_groups:
            group["params"] = [new_params[id(p)] for p in group["params"]]
    host.runs = runs
    return host


class RunSlice:
    """Run k's view of the stacked algorithm: what ``Trainer`` asks of an algorithm for
    checkpoints, summaries and resuming, in the single-run format."""

    def __init__(self, host: Algorithm, run: int, parameter_counts: dict):
        self.host, self.run, self.counts = host, run, parameter_counts

    def parameters(self):
        return [p[self.run] for p in self.host.parameters()]

    def parameter_counts(self) -> dict:
        return dict(self.counts)

    def state_dict(self) -> dict:
        return {key: value[self.run].clone() for key, value in self.host.state_dict().items()}

    def _optimizer_params(self, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        return [p for group in optimizer.param_groups for p in group["params"]]

    def training_state(self) -> dict:
        optimizers = {}
        for key, optimizer in self.host.optimizers.items():
            full = optimizer.state_dict()
            params = self._optimizer_params(optimizer)
            state = {}
            for index, entries in full["state"].items():
                shape = params[index].shape
                state[index] = {name: (value[self.run].clone()
                                       if isinstance(value, torch.Tensor) and value.shape == shape else value)
                                for name, value in entries.items()}
            optimizers[key] = {"state": state, "param_groups": full["param_groups"]}
        return {"modules": self.state_dict(), "optimizers": optimizers,
                "schedules": {k: s.state_dict() for k, s in self.host.schedules.items()}}

    @torch.no_grad()
    def load_training_state(self, state: dict) -> None:
        host = self.host
        Algorithm._check_schedule_lengths(host, state)
        own = host.state_dict()
        saved = state["modules"]
        missing = sorted(set(own) - set(saved)) + sorted(set(saved) - set(own))
        if missing:
            raise KeyError(f"state entries differ: {', '.join(missing[:3])}")
        for key, value in saved.items():
            if own[key][self.run].shape != value.shape:
                raise RuntimeError(f"{key}: shape {tuple(value.shape)}, expected {tuple(own[key][self.run].shape)}")
            own[key][self.run].copy_(value)
        for key, optimizer in host.optimizers.items():
            saved_opt = state["optimizers"][key]
            params = self._optimizer_params(optimizer)
            for group, saved_group in zip(optimizer.param_groups, saved_opt["param_groups"]):
                group.update({k: v for k, v in saved_group.items() if k != "params"})
            for index, entries in saved_opt["state"].items():
                param = params[int(index)]
                target = optimizer.state[param]
                for name, value in entries.items():
                    if isinstance(value, torch.Tensor) and value.dim() and param.shape[1:] == value.shape:
                        if name not in target:
                            target[name] = torch.zeros(param.shape, dtype=value.dtype, device=param.device)
                        target[name][self.run].copy_(value)
                    else:  # shared by the runs (Adam's step count): the same in every run's checkpoint
                        target[name] = value.to(param.device) if isinstance(value, torch.Tensor) else value
        for key, schedule in host.schedules.items():
            schedule.load_state_dict(state["schedules"][key])


class RunRecord(Trainer):
    """The trainer's bookkeeping for one run of a batched job (its folder, history, summary,
    checkpoints, resume), with its model a ``RunSlice`` and its random streams its own."""

    def __init__(self, group: ParallelTrainer, run: int, seed: int, run_dir: Path, cpu_stream: torch.Generator,
                 device_stream: torch.Generator, parameter_counts: dict):
        self.cfg = OmegaConf.merge(group.cfg, {"seed": seed, "trainer": {"parallel_runs": 1}})
        self.typed = copy.deepcopy(group.typed)
        self.typed.seed, self.typed.trainer.parallel_runs = seed, 1
        self.run_dir, self.choices = Path(run_dir), group.choices
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device, self.dtype, self.data = group.device, group.dtype, group.data
        self.run = run
        self.algorithm = RunSlice(group.algorithm, run, parameter_counts)
        self.cpu_stream, self.device_stream = cpu_stream, device_stream
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # its data order
        self.learning_signal = (LearningSignal(group.algorithm, self.typed.diagnostics,
                                               self.typed.trainer.frozen_blocks, run=run)
                                if self.typed.diagnostics.learning_signal else None)
        self._start_records()
        self.log_prefix = f"seed {seed}: "
        self.activation_check: dict | None = None
        self.activation_blowup: str | None = None
        self.active = True  # False once it diverged (or was found finished on resume)
        self.extra_summary = {"parallel": {"runs": group.runs, "run": run, "seeds": group.seeds,
                                           "job_dir": str(group.run_dir),
                                           "note": "trained batched with the other seeds; epoch_seconds is the "
                                                   "batched epoch's wall time, shared by all runs"}}
        self._write_hydra_files(group)

    def _stream_states(self) -> dict:
        """As a single run stores them: CUDA states of every device, this run's own at its device."""
        cuda = []
        if self.device.type == "cuda":
            cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
            cuda[self.device.index or torch.cuda.current_device()] = self.device_stream.get_state()
        return {"rng_cpu": self.cpu_stream.get_state(), "rng_cuda": cuda}

    def _restore_streams(self, state: dict, moved: bool) -> None:
        self.cpu_stream.set_state(state["rng_cpu"].cpu())
        if state["rng_cuda"] and not moved:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            saved = state["rng_cuda"]
            self.device_stream.set_state(saved[index if index < len(saved) else 0].cpu())
        elif self.device.type == "cpu":
            self.device_stream.set_state(state["rng_cpu"].cpu())  # one stream on the CPU

    def _write_hydra_files(self, group: ParallelTrainer) -> None:
        """``.hydra/config.yaml`` and ``overrides.yaml`` as Hydra would have written them for a run
        of this seed alone (the report and evaluate scripts read them)."""
        hydra_dir = self.run_dir / ".hydra"
        hydra_dir.mkdir(exist_ok=True)
        (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg))
        overrides = [o for o in group.overrides
                     if not o.lstrip("+~").startswith(("seed=", "trainer.parallel_runs="))]
        (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides + [f"seed={self.typed.seed}"]))


# ---------------------------------------------------------------- the batched loop
class ParallelTrainer:
    """Trains ``trainer.parallel_runs`` seeds as one batched model; ``records`` are the runs."""

    def __init__(self, cfg, typed, run_dir: Path, choices: dict | None = None, overrides: list[str] | None = None):
        t, d = typed.trainer, typed.diagnostics
        if d.every_n_steps:
            raise ConfigError("diagnostics.every_n_steps: the alignment diagnostics measure one model; set it to 0 "
                              "with trainer.parallel_runs > 1, or run the seeds one by one")
        if typed.logger.name == "wandb":
            raise ConfigError("logger: W&B logs one run per process; use logger=none with trainer.parallel_runs > 1 "
                              "(every run still writes its metrics.jsonl), or run the seeds one by one")
        self.cfg, self.typed, self.run_dir = cfg, typed, Path(run_dir)
        self.choices, self.overrides = choices or {}, list(overrides or [])
        self.runs = t.parallel_runs
        self.seeds = [typed.seed + k for k in range(self.runs)]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device, self.dtype, self.autocast, self.accumulate_dtype = training_device(t)
        self.data = DeviceData(typed.dataset, self.device, self.dtype, t.val_size, typed.seed)
        self.geometry = check_geometry(typed.arch, self.data.input_shape, self.data.num_classes, t.batch_size,
                                       self.device, self.dtype, t.eval_batch_size, runs=self.runs)
        notice = outside_papers_notice(typed.algorithm.name, typed.arch.name, typed.dataset.name)
        if notice:
            warn(notice)
        algorithms, cpu_states, device_states = [], [], []
        for seed in self.seeds:  # each run built as its single run builds it (see the module docstring)
            seed_everything(seed)
            network = build_network(typed.arch, self.data.input_shape, self.data.num_classes)
            network.to(device=self.device, dtype=self.dtype)
            algorithm = build_algorithm(typed.algorithm, network, t.epochs)
            algorithm.to(device=self.device, dtype=self.dtype)
            if not algorithms:
                problem = batching_problem(algorithm)
                if problem:
                    raise ConfigError(problem)
            algorithms.append(algorithm)
            cpu_states.append(torch.get_rng_state())
            device_states.append(torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        counts = algorithms[0].parameter_counts()
        self.algorithm = stack_algorithms(algorithms)
        cpu_streams = [_generator(torch.device("cpu"), s) for s in cpu_states]
        device_streams = (cpu_streams if self.device.type == "cpu"
                          else [_generator(self.device, s) for s in device_states])
        self.algorithm.streams = RunStreams(cpu_streams, device_streams)
        if t.frozen_blocks:
            self.algorithm.freeze_blocks(t.frozen_blocks)
        self.train_step = (self.algorithm.train_step if t.compile == "off"
                           else torch.compile(self.algorithm.train_step, mode=t.compile))
        self.records = [RunRecord(self, k, seed, folder, cpu_streams[k], device_streams[k], counts)
                        for k, (seed, folder) in enumerate(zip(self.seeds, run_folders(self.run_dir, typed.seed,
                                                                                      self.runs)))]
        self._activation_probe = () if d.activation_growth_limit > 0 else None
        self.step = self.start_epoch = 0

    # ------------------------------------------------------------ batches of all runs
    def train_batches(self, limit: int | None, fixed: bool):
        """Each run's batch from its own data order, run-major: ``(K·B, …)``."""
        return self.data.train_batches_of_runs(self.typed.trainer.batch_size, [r.generator for r in self.records],
                                               limit, fixed=fixed)

    @torch.no_grad()
    def evaluate(self, split: str) -> list[tuple[float, float | None]]:
        """(top-1, top-5) error per run: every run sees the same examples."""
        t = self.typed.trainer
        wrong = torch.zeros(self.runs, device=self.device)
        wrong_top5 = torch.zeros(self.runs, device=self.device)
        n, classes = 0, 0
        with self.autocast:
            for x, y in self.data.eval_batches(split, t.eval_batch_size, t.limit_eval_batches):
                logits = by_run(self.algorithm.predict(x.repeat(self.runs, *[1] * (x.dim() - 1))), self.runs)
                classes = logits.shape[-1]
                wrong += (logits.argmax(-1) != y).sum(1)
                if classes > 5:
                    wrong_top5 += (logits.topk(5, dim=-1).indices != y[:, None]).all(-1).sum(1)
                n += len(y)
        top1 = (100.0 * wrong / max(n, 1)).tolist()
        top5 = (100.0 * wrong_top5 / max(n, 1)).tolist()
        return [(a, b if classes > 5 else None) for a, b in zip(top1, top5)]

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_epoch(self, epoch: int) -> list[dict]:
        t = self.typed.trainer
        limit = t.overfit_batches or t.limit_train_batches
        factory = lambda: self.train_batches(limit, fixed=t.overfit_batches > 0)  # noqa: E731
        self.algorithm.train()
        for r in self.records:
            if r.learning_signal is not None:
                r.learning_signal.begin_epoch()
        start = time.perf_counter()
        with self.autocast:
            self.algorithm.before_epoch(epoch, factory)
        loss_sum = torch.zeros(self.runs, device=self.device, dtype=self.accumulate_dtype)
        wrong = torch.zeros(self.runs, device=self.device, dtype=self.accumulate_dtype)
        n = 0
        for x, y in factory():
            if self._activation_probe is not None:
                self._check_activations(x)
            with self.autocast:
                loss, logits = self.train_step(x, y)
            per_run = len(y) // self.runs
            loss_sum += loss.to(self.accumulate_dtype) * per_run
            wrong += (by_run(logits, self.runs).argmax(-1) != by_run(y, self.runs)).sum(1)
            n += per_run
            self.step += 1
        self._synchronize()
        seconds = time.perf_counter() - start
        self.algorithm.eval()
        losses, errors = (loss_sum / max(n, 1)).tolist(), (100.0 * wrong / max(n, 1)).tolist()
        rows = []
        for r, loss_value, error in zip(self.records, losses, errors):
            row = {"train_loss": loss_value, "train_error": error, "epoch_seconds": seconds,
                   "examples_per_second": n / max(seconds, 1e-9), **self.algorithm.learning_rates()}
            if r.learning_signal is not None:
                row["learning_signal"] = r.learning_signal.end_epoch()
            rows.append(row)
        return rows

    def _check_activations(self, x: torch.Tensor) -> None:
        """The trainer's early activation check, per run."""
        d = self.typed.diagnostics
        if self.step == 0:
            self._activation_probe = (x, activation_rms(self.algorithm.network, x, self.runs))
        elif self.step == d.activation_check_step:
            probe, before = self._activation_probe
            after = activation_rms(self.algorithm.network, probe, self.runs)
            self._activation_probe = None
            for r, b, a in zip(self.records, before, after):
                r.activation_check = {"step": self.step, "rms_before": b, "rms_after": a}
                r.activation_blowup = activation_growth(b[:-1], a[:-1], d.activation_growth_limit)
                if r.activation_blowup:
                    warn(f"warning: seed {r.typed.seed}: {r.activation_blowup}; the run may diverge (check the lr "
                         f"and the input normalisation)")

    # ------------------------------------------------------------ the loop
    def fit(self) -> list[dict]:
        with train_log(self.run_dir):
            log.info("batched job %s: %d runs (seeds %s), device %s\nconfig:\n%s", self.run_dir, self.runs,
                     ", ".join(map(str, self.seeds)), self.device,
                     OmegaConf.to_yaml(self.cfg, resolve=True).rstrip())
            self._start()
            return self._fit()

    def _start(self) -> None:
        """Fresh runs, or (resume=true) every run from its checkpoint, all at one epoch."""
        (self.run_dir / SUMMARY).unlink(missing_ok=True)  # the job's folder is not a run (an earlier failure's note)
        resumed = []
        for r in self.records:
            if self.typed.resume and _finished(r):
                r.active = False  # diverged, or completed at this length: carried along, never recorded again
                continue
            if self.typed.resume and r.try_resume():
                resumed.append(r)
            else:
                (r.run_dir / METRICS).write_text("")
                for stale in (CHECKPOINT, CHECKPOINT_HASH, BEST_CHECKPOINT, SUMMARY):
                    (r.run_dir / stale).unlink(missing_ok=True)
        active = [r for r in self.records if r.active]
        epochs = {r.start_epoch for r in active}
        if resumed and (len(resumed) != len(active) or len(epochs) != 1):
            where = ", ".join(f"{r.run_dir.name}: epoch {r.start_epoch if r in resumed else 0}" for r in active)
            raise ConfigError(f"resume: the runs of {self.run_dir} stand at different epochs ({where}); batched runs "
                              f"continue together, so resume them one by one (python train.py seed=S "
                              f"hydra.run.dir=<run folder> resume=true) or start again with resume=false")
        self.start_epoch = epochs.pop() if epochs else 0
        self.step = max((r.step for r in active), default=0)
        if resumed:
            self._activation_probe = None
        for r in self.records:
            if r.active:
                r.write_summary("running")

    def _fit(self) -> list[dict]:
        t = self.typed.trainer
        for epoch in range(self.start_epoch, t.epochs):
            active = [r for r in self.records if r.active]
            if not active:
                break
            rows = self.train_epoch(epoch)
            evaluated = {}
            for r, row in zip(self.records, rows):
                if not r.active:
                    continue
                row = {"epoch": epoch + 1, **row}
                r.elapsed += row["epoch_seconds"]
                r.step = self.step
                if r._diverged(row):
                    r.write_summary("diverged")
                    r.active = False
                    continue
                evaluated[r.run] = row
            if not evaluated:
                break
            test = self.evaluate("test")
            val = self.evaluate("val") if self.data.val_y is not None else None
            self.algorithm.after_epoch(epoch)
            with _interrupts_deferred():  # every run's checkpoint at this epoch, or none: they resume together
                self._record_epoch(evaluated, test, val)
        return [r.write_summary("completed") if r.active else _read_summary(r.run_dir) for r in self.records]

    def _record_epoch(self, evaluated: dict[int, dict], test: list, val: list | None) -> None:
        for k, row in evaluated.items():
            self.records[k]._record_epoch(row, test[k], val[k] if val is not None else None)

    def write_summary(self, status: str) -> list[dict]:
        """Every still-active run's summary with ``status`` (interrupted, failed)."""
        return [r.write_summary(status) for r in self.records if r.active]

    @property
    def history(self) -> list[dict]:
        """The epochs every run has completed (run.py reports progress from it)."""
        return min((r.history for r in self.records), key=len, default=[])


@contextlib.contextmanager
def _interrupts_deferred():
    """SIGINT / SIGTERM arriving inside the block are delivered when it ends (to the handlers
    that were in place), so the block is never cut in half. Main thread only (signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(received):
            signal.raise_signal(s)


def _finished(record: RunRecord) -> bool:
    """Whether a run's folder already holds its end: diverged, or completed by this config at this length."""
    summary = _read_summary(record.run_dir)
    if summary.get("status") == "diverged":
        return True
    return (summary.get("status") == "completed" and summary.get("config_hash") == config_hash(record.cfg)
            and summary.get("epochs_completed") == record.typed.trainer.epochs)


def _read_summary(run_dir: Path) -> dict:
    import json

    try:
        return json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return {}
