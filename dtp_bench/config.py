"""Typed configuration schemas, registered in Hydra's ConfigStore.

Every YAML option in ``conf/`` starts from one of these schemas (``defaults: [<name>_schema]``),
so Hydra rejects an unknown key or a value of the wrong type while composing. Values that are
well typed but impossible (a negative learning rate, a zero batch size) are rejected by
``validate``, which runs before any data is read or any model is built.

Algorithms and architectures register their own schemas next to their code with
``register_schema`` so adding one means one module and one YAML file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and the fix."""


# ---------------------------------------------------------------- helpers for __post_init__
def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_choice(value: Any, key: str, allowed: tuple[str, ...] | list[str]) -> None:
    check(value in allowed, key, f"got {value!r}; choose one of {', '.join(map(str, allowed))}")


def check_positive(value: Any, key: str, allow_zero: bool = False) -> None:
    bound = ">= 0" if allow_zero else "> 0"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    check(number, key, f"must be a number ({bound}), got {value!r}")
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    check(ok, key, f"must be {bound}, got {value!r}")


def nest(dotted: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}"""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def per_layer(value: Any, n_layers: int, key: str, allow_zero: bool = True) -> list[float]:
    """A hyperparameter given as one number or as a list with one value per layer (forward order)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [float(value)] * n_layers
    else:
        values = [float(v) for v in value]
        check(len(values) == n_layers, key,
              f"has {len(values)} values but this network has {n_layers} layers that use it; "
              f"give one number or a list of {n_layers}")
    for v in values:
        check_positive(v, key, allow_zero=allow_zero)
    return values


def check_number_or_list(value: Any, key: str, allow_zero: bool = True) -> None:
    items = value if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]
    check(len(items) > 0, key, "must not be empty")
    for v in items:
        check_positive(v, key, allow_zero=allow_zero)


# ---------------------------------------------------------------- optimizer
OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("none", "cosine", "step")


@dataclass
class OptimizerConfig:
    """One optimizer and its schedule. ``lr`` may be a list (one value per layer) where the
    algorithm trains layers separately (target-propagation feedback, for instance)."""

    name: str = "adam"  # sgd, adam or rmsprop (torch.optim's SGD, Adam, RMSprop)
    lr: Any = 1e-3  # learning rate; the target-propagation family also takes a list, one per layer
    momentum: float = 0.0  # sgd, rmsprop: momentum factor, in [0, 1)
    nesterov: bool = False  # sgd: Nesterov momentum (needs momentum > 0)
    beta1: float = 0.9  # adam: decay rate of the running mean of the gradient
    beta2: float = 0.999  # adam: decay rate of the running mean of the squared gradient
    eps: float = 1e-8  # adam, rmsprop: added to the denominator √v̂ for stability
    alpha: float = 0.99  # rmsprop smoothing constant
    centered: bool = False  # rmsprop: divide by the centred (variance) estimate instead of the raw second moment
    weight_decay: float = 0.0  # L2 penalty: weight_decay·θ added to the gradient (torch.optim's weight_decay)
    schedule: str = "none"  # learning-rate schedule, stepped once per epoch: none, cosine or step
    cosine_t_max: int | None = None  # schedule=cosine: its period in epochs; null = trainer.epochs
    cosine_eta_min: float = 0.0  # schedule=cosine: the learning rate it decays to
    step_size: int = 30  # epochs between decays (schedule=step)
    step_gamma: float = 0.1  # schedule=step: the factor the learning rate is multiplied by at each decay

    def validate(self, key: str) -> None:
        check_choice(self.name, f"{key}.name", OPTIMIZERS)
        check_choice(self.schedule, f"{key}.schedule", SCHEDULES)
        check_number_or_list(self.lr, f"{key}.lr", allow_zero=False)
        check(0.0 <= self.momentum < 1.0, f"{key}.momentum", f"must be in [0, 1), got {self.momentum}")
        check(not (self.nesterov and self.momentum == 0), f"{key}.nesterov",
              "needs momentum > 0")
        check(0.0 <= self.beta1 < 1.0, f"{key}.beta1", f"must be in [0, 1), got {self.beta1}")
        check(0.0 <= self.beta2 < 1.0, f"{key}.beta2", f"must be in [0, 1), got {self.beta2}")
        check_positive(self.eps, f"{key}.eps")
        check(0.0 <= self.alpha < 1.0, f"{key}.alpha", f"must be in [0, 1), got {self.alpha}")
        check_positive(self.weight_decay, f"{key}.weight_decay", allow_zero=True)
        check(self.cosine_t_max is None or self.cosine_t_max > 0, f"{key}.cosine_t_max", "must be > 0")
        check_positive(self.cosine_eta_min, f"{key}.cosine_eta_min", allow_zero=True)
        check_positive(self.step_size, f"{key}.step_size")
        check(0.0 < self.step_gamma <= 1.0, f"{key}.step_gamma", "must be in (0, 1]")


# ---------------------------------------------------------------- groups
PRECISIONS = ("fp32", "fp64", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass
class TrainerConfig:
    epochs: int = 20  # forward epochs (feedback-only epochs of alternating or pre-training schedules come on top)
    batch_size: int = 128  # training examples per update
    eval_batch_size: int = 1000  # examples per forward pass when measuring errors (no effect on results)
    device: str = "auto"  # auto = cuda if available, else cpu; or cpu, cuda, cuda:1, mps
    precision: str = "fp32"  # fp32, fp64, or bf16 (autocast; parameters stay fp32)
    val_size: int = 0  # 0 = train on the full training set and report test, as the papers did
    limit_train_batches: int | None = None  # null = all; for quick checks
    limit_eval_batches: int | None = None  # null = all; evaluate on the first N batches only (quick checks)
    # > 0: train on the first N batches of the training set, the same ones in the same order every
    # epoch (no shuffling): a debug check that a method can fit a few examples (train error → 0)
    overfit_batches: int = 0
    checkpoint: bool = True  # checkpoint.pt after every epoch (atomic): what resume=true continues from
    # whether a completed run keeps checkpoint.pt: null = a single run keeps it, a sweep job deletes
    # it once completed (written while running, so an interrupted sweep still resumes)
    keep_checkpoint: bool | None = None
    # also write best.pt (weights only) at the epoch with the lowest validation error (the test
    # error when trainer.val_size=0, which is then selection on the test set: say so when reporting)
    save_best: bool = False
    progress: str = "auto"  # auto = a tqdm bar only when stdout is a terminal; on; off
    # torch.compile of the training step: off, or a torch.compile mode (reduce-overhead captures the
    # compiled step in CUDA graphs on a GPU); the first steps pay the compilation
    compile: str = "off"
    # TF32 tensor-core matmuls and convolutions on Ampere+ GPUs: faster, ~1e-3 relative error per
    # product; off = full fp32, as the papers ran. Recorded in summary.json (no effect on CPU)
    tf32: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are already)
    # forward blocks (0 = first) whose weights are never updated: a control, e.g. every hidden
    # block frozen = only the output block learns, on fixed random features
    frozen_blocks: list[int] = field(default_factory=list)
    # K > 1: train the seeds seed, seed+1, …, seed+K−1 of this configuration in one process as one
    # batched model (weights stacked along a run axis), each in <run dir>/seed_<s> exactly as a run
    # of its own: metrics, summary, checkpoint (see README, "Batched runs"); every arch
    parallel_runs: int = 1

    def validate(self, key: str = "trainer") -> None:
        check_positive(self.epochs, f"{key}.epochs")
        check_positive(self.parallel_runs, f"{key}.parallel_runs")
        check_positive(self.batch_size, f"{key}.batch_size")
        check_positive(self.eval_batch_size, f"{key}.eval_batch_size")
        check_choice(self.precision, f"{key}.precision", PRECISIONS)
        check_choice(self.compile, f"{key}.compile", COMPILE_MODES)
        check_choice(self.progress, f"{key}.progress", ("auto", "on", "off"))
        check_positive(self.val_size, f"{key}.val_size", allow_zero=True)
        check_positive(self.overfit_batches, f"{key}.overfit_batches", allow_zero=True)
        check(not (self.overfit_batches and self.limit_train_batches), f"{key}.overfit_batches",
              "set either trainer.overfit_batches (fixed batches) or trainer.limit_train_batches (shuffled), not both")
        for name in ("limit_train_batches", "limit_eval_batches"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{key}.{name}", f"must be null or > 0, got {value}")
        check(all(b >= 0 for b in self.frozen_blocks) and len(set(self.frozen_blocks)) == len(self.frozen_blocks),
              f"{key}.frozen_blocks", f"block indices, 0 for the first, each once; got {self.frozen_blocks}")
        device = self.device
        check(device in ("auto", "cpu", "mps") or device.startswith("cuda"), f"{key}.device",
              f"got {device!r}; use auto, cpu, cuda, cuda:N or mps")


@dataclass
class AugmentConfig:
    """Batched, on-device augmentation of training images (test images are only normalised)."""

    crop_padding: int = 0  # random crop of the original size after padding by this many pixels
    padding_mode: str = "zero"  # how the crop pads: zero (black pixels) or edge (the border pixels repeated)
    hflip: bool = False  # flip each training image left-right with probability 1/2
    vflip: bool = False  # flip each training image upside down with probability 1/2

    def validate(self, key: str) -> None:
        check_positive(self.crop_padding, f"{key}.crop_padding", allow_zero=True)
        check_choice(self.padding_mode, f"{key}.padding_mode", ("zero", "edge"))


DATASETS = ("mnist", "fmnist", "cifar10", "cifar100", "imagenet32")


@dataclass
class DatasetConfig:
    name: str = MISSING  # which data: mnist, fmnist, cifar10, cifar100 or imagenet32 (set by the option file)
    root: str | None = None  # null = $DTP_BENCH_DATA or ~/.cache/dtp_bench
    download: bool = True  # through torchvision, when files are missing and a network exists
    # inputs are normalised per channel as (x − mean) / std, x the pixel values in [0, 1]
    mean: list[float] = field(default_factory=lambda: [0.0])  # one value, or one per channel
    std: list[float] = field(default_factory=lambda: [1.0])  # the normalisation's divisor: one value or one per channel
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training-image augmentation (off by default)
    pca_components: int | None = None  # project flattened inputs on the top-k principal axes

    def validate(self, key: str = "dataset") -> None:
        check_choice(self.name, f"{key}.name", DATASETS)
        check(len(self.mean) == len(self.std) and len(self.mean) > 0, f"{key}.mean",
              "mean and std need the same number of values (1 or one per channel)")
        for s in self.std:
            check_positive(s, f"{key}.std")
        check(self.pca_components is None or self.pca_components > 0, f"{key}.pca_components",
              "must be null or > 0")
        self.augment.validate(f"{key}.augment")


LOGGERS = ("none", "wandb")


@dataclass
class LoggerConfig:
    """metrics.jsonl and summary.json are always written; this adds an external logger."""

    name: str = "none"  # none (only the run folder's files) or wandb (Weights & Biases as well)
    project: str = "dtp_bench"  # wandb project
    entity: str | None = None  # wandb entity (user or team); null = wandb's default for your login
    mode: str = "offline"  # offline, online or disabled: wandb never touches the network unless set to online
    tags: list[str] = field(default_factory=list)  # wandb run tags

    def validate(self, key: str = "logger") -> None:
        check_choice(self.name, f"{key}.name", LOGGERS)
        check_choice(self.mode, f"{key}.mode", ("offline", "online", "disabled"))


@dataclass
class DiagnosticsConfig:
    """Alignment diagnostics (angles with backprop; off by default) and the learning signal (each
    forward block's update size per epoch; on by default, see dtp_bench/learning_signal.py)."""

    every_n_steps: int = 0  # log the alignment angles with backprop every this many steps; 0 = off
    jacobian_samples: int = 4  # samples used to estimate feedback Jacobians
    learning_signal: bool = True  # per block: ‖Δθ‖/‖θ‖ per epoch and Adam's step fraction
    # a hidden block below either threshold in every epoch is reported as starved
    starved_update_ratio: float = 1e-3  # threshold on ‖θ_end − θ_start‖ / ‖θ_start‖ over one epoch
    starved_step_fraction: float = 0.1  # threshold on Adam's mean √v̂/(√v̂ + ε), the share of the nominal step
    # early activation check: the RMS of each hidden block's output on the first batch, again after
    # activation_check_step updates; growth beyond activation_growth_limit prints a warning
    activation_check_step: int = 8
    activation_growth_limit: float = 10.0  # warn when a block's RMS grows by more than this factor (0 = no check)

    def validate(self, key: str = "diagnostics") -> None:
        check_positive(self.every_n_steps, f"{key}.every_n_steps", allow_zero=True)
        check_positive(self.jacobian_samples, f"{key}.jacobian_samples")
        check_positive(self.starved_update_ratio, f"{key}.starved_update_ratio", allow_zero=True)
        check(0.0 <= self.starved_step_fraction <= 1.0, f"{key}.starved_step_fraction",
              f"must be in [0, 1], got {self.starved_step_fraction}")
        check_positive(self.activation_check_step, f"{key}.activation_check_step")
        check_positive(self.activation_growth_limit, f"{key}.activation_growth_limit", allow_zero=True)


@dataclass
class ReferenceConfig:
    """What a preset reproduces; the report joins runs to the paper's numbers on these fields."""

    paper: str = ""  # the paper's short name, e.g. bartunov2018
    table: str = ""  # the table in it, e.g. Table 1
    row: str = ""  # the table's row, e.g. DTP alternating
    column: str = ""  # the table's column, e.g. MNIST FC
    # which of our numbers the paper's is compared with (errors and accuracies in %): test_error,
    # best_test_error (lowest over the epochs), train_error, best_train_error, test_accuracy,
    # best_test_accuracy, top5_accuracy, epoch_seconds
    metric: str = "test_error"
    value: float | None = None  # the paper's number; null = it gives none
    std: float | None = None  # the paper's standard deviation over seeds, where it gives one
    note: str = ""  # provenance; "paper train error: X%" and "paper top-5 error: X%" are read by the report


@dataclass
class Config:
    algorithm: Any = MISSING  # the learning rule (algorithm=<option>; the option decides its schema)
    dataset: DatasetConfig = MISSING  # the data (dataset=<option>)
    arch: Any = MISSING  # the network (arch=<option>; the option decides its schema)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # epochs, batches, device, checkpoints
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # an external logger (logger=<option>)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)  # alignment and learning signal
    reference: ReferenceConfig | None = None  # what a preset reproduces (conf/experiment); null for other runs
    seed: int = 0  # seeds Python, NumPy and torch: weights, batch order, noise, augmentation (not the val split)
    # continue from the run folder's checkpoint.pt (same config required); a run already completed there
    # is not run again
    resume: bool = False


# ---------------------------------------------------------------- registry of schemas
_store = ConfigStore.instance()


def register_schema(group: str, name: str, node: type) -> type:
    """Store ``node`` as ``<group>/<name>_schema``; ``conf/<group>/<name>.yaml`` extends it."""
    _store.store(group=group, name=f"{name}_schema", node=node)
    return node


_store.store(name="config_schema", node=Config)
register_schema("trainer", "default", TrainerConfig)
register_schema("logger", "base", LoggerConfig)
register_schema("dataset", "base", DatasetConfig)


def _check_known_keys(node: DictConfig, path: str = "") -> None:
    """Hydra's ``+key=value`` adds keys even to typed nodes; ``to_object`` would drop them silently."""
    schema = OmegaConf.get_type(node)
    known = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    for key in node.keys():
        full = f"{path}{key}"
        if known is not None and key not in known:
            raise ConfigError(f"{full}: unknown key ({schema.__name__} has no such field); check the "
                              f"spelling, and drop the leading '+' from the override")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _check_known_keys(child, f"{full}.")


def validate(cfg: DictConfig) -> Any:
    """Turn the composed config into dataclass objects and check every value.

    Returns the typed object tree (``Config``). Raises ``ConfigError`` naming the first bad key.
    """
    _check_known_keys(cfg)
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:  # missing mandatory values, interpolation errors
        raise ConfigError(str(exc).splitlines()[0]) from exc
    for name in ("algorithm", "arch"):
        node = getattr(obj, name)
        if not is_dataclass(node):
            raise ConfigError(f"{name}: no {name} selected; pass {name}=<option> (see README)")
        node.validate(name)
    obj.trainer.validate("trainer")
    obj.dataset.validate("dataset")
    obj.logger.validate("logger")
    obj.diagnostics.validate("diagnostics")
    check(obj.seed >= 0, "seed", f"must be >= 0, got {obj.seed}")
    return obj
