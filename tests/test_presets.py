"""Every experiment preset (conf/experiment/**) composes, validates and trains one step.

For each preset: compose ``experiment=<name>`` with the Hydra compose API, validate it, build the
network and algorithm for the dataset's input shape (dtp_bench.data.SPECS) and run one
``train_step`` on a random batch of 4 on the CPU (no data is read), which must change the weights
of every layer (and feedback-only passes before it none of them). Sweep presets are also
composed with their sweeper parameters set to the first and to the last value of every swept key
(interval sweeps: their bounds) and with each option of a swept config group, and validated.
"""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import CONF, compose
from omegaconf import OmegaConf, open_dict

from dtp_bench.config import validate

EXPERIMENTS = CONF / "experiment"
PRESETS = sorted(p.relative_to(EXPERIMENTS).with_suffix("").as_posix() for p in EXPERIMENTS.rglob("*.yaml"))


def test_presets_exist():
    names = set(PRESETS)
    assert len(PRESETS) > 100
    for cell in ("bartunov2018/mnist_fc/dtp_parallel", "bartunov2018/cifar_lc/bp_convnet",
                 "shibuya2023/fmnist/fw_dtp", "ernoult2022/vgg_cifar10/l_drl", "investigation2019/depth"):
        assert cell in names


def sweep_values(key: str, value) -> tuple[list, list[str]]:
    """The values a sweeper would give ``key`` (parsed, and as override strings): every choice;
    an interval's two bounds."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    override = OverridesParser.create().parse_override(f"{key}={value}")
    swept = override.value()
    if isinstance(swept, IntervalSweep):
        bounds = [float(swept.start), float(swept.end)]
        return bounds, [repr(b) for b in bounds]
    if override.is_sweep_override():
        return list(swept.list), list(override.sweep_string_iterator())
    return [swept], [str(value)]


SHRINK = {"hidden": 64, "fc_hidden": 64, "channels": 16}  # widths capped for speed; depth kept
_stepped: set[str] = set()


def small(arch, shape, num_classes):
    """The preset's architecture with every width capped (same depth, kernels, strides, input shape)."""
    arch = copy.deepcopy(arch)
    if arch.name in ("lc", "conv") and arch.layers is None:  # the paper's stack, spelled out
        from dtp_bench.nn.archs import paper_stack

        layers, fc_hidden = paper_stack(shape, num_classes)
        arch.layers = [list(layer) for layer in layers]
        arch.fc_hidden = list(fc_hidden) if arch.fc_hidden is None else arch.fc_hidden
    for key, cap in SHRINK.items():
        if getattr(arch, key, None):
            setattr(arch, key, [min(w, cap) for w in getattr(arch, key)])
    if getattr(arch, "layers", None):
        arch.layers = [[k, min(c, 16), s] for k, c, s in arch.layers]
    return arch


def one_step(typed) -> None:
    """Build the preset's algorithm on its (width-capped) network and train one random batch of 4."""
    from dtp_bench.algorithms.base import build_algorithm
    from dtp_bench.data import SPECS
    from dtp_bench.nn.blocks import build_network

    spec = SPECS[typed.dataset.name]
    shape = (typed.dataset.pca_components,) if typed.dataset.pca_components else (spec.channels, spec.size, spec.size)
    arch = small(typed.arch, shape, spec.num_classes)
    algo = copy.deepcopy(typed.algorithm)
    if hasattr(algo, "feedback_iterations"):  # L-DRL's K_i feedback updates per batch, capped at 2
        k = algo.feedback_iterations
        algo.feedback_iterations = [min(i, 2) for i in k] if isinstance(k, (list, tuple)) else min(k, 2)
    signature = repr((algo, arch, typed.dataset.name, typed.dataset.pca_components))
    if signature in _stepped:  # the same structure was already stepped by another preset
        return
    torch.manual_seed(0)
    network = build_network(arch, shape, spec.num_classes)
    algorithm = build_algorithm(algo, network, typed.trainer.epochs)
    x, y = torch.randn(4, *shape), torch.randint(0, spec.num_classes, (4,))
    algorithm.train()
    passes = []  # feedback pre-training / alternating epochs: one batch on the first pass, then none

    def batches():
        passes.append(1)
        return iter([(x, y)] if len(passes) == 1 else [])

    start = [p.detach().clone() for p in network.parameters()]
    algorithm.before_epoch(0, batches)
    # feedback-only passes (pre-training, alternating schedules) leave the forward weights alone
    assert all(torch.equal(a, p) for a, p in zip(start, network.parameters()))
    loss, logits = algorithm.train_step(x, y)
    algorithm.after_epoch(0)
    assert logits.shape == (4, spec.num_classes)
    assert torch.isfinite(loss), "one step on random data gave a non-finite loss"
    # the step trained every layer (no preset starts with a zero rate: schedules are cosine or
    # step, stepped after the epoch; alternating schedules take their forward step in train_step)
    params = list(network.parameters())
    unchanged = [i for i, block in enumerate(network.blocks)
                 if torch.equal(block.weight_op.weight, next(a for a, p in zip(start, params)
                                                             if p is block.weight_op.weight))]
    a = typed.algorithm
    if (getattr(a, "feedback", "") == "learned" and getattr(a, "feedback_init", "") == "uniform"
            and a.optimizer.name == "sgd" and a.optimizer.lr == 1e-3):
        # an *_shibuya_code variant at FW-DTP's code defaults (SGD lr 1e-3, B ~ U(+-0.01)) until its row's
        # search has run: a lower block's first step can fall below float32 resolution (the run's
        # learning-signal warning reports such a block)
        return
    assert not unchanged, f"one step left the weights of blocks {unchanged} unchanged"
    _stepped.add(signature)


def compose_preset(name: str, overrides: list[str] = ()):
    """The composed job config and the sweeper's params (the hydra node removed)."""
    cfg = compose([f"experiment={name}", *overrides], return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    params = OmegaConf.to_container(params, resolve=False) if OmegaConf.is_config(params) else dict(params)
    with open_dict(cfg):
        cfg.pop("hydra")
    return cfg, params


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_validates_and_steps(name):
    cfg, params = compose_preset(name)
    typed = validate(cfg)
    if not name.split("/")[-2:-1] == ["method"]:  # the investigation's method snippets carry no reference
        ref = typed.reference
        assert ref is not None and ref.paper and ref.table and ref.row and ref.column and ref.metric, name
        assert ref.paper == name.split("/")[0], "the preset's folder names its paper"
    one_step(typed)
    # the sweep: every swept key at its first and at its last value (interval bounds) applied to the
    # composed config; each other option of a swept config group composed and stepped on its own
    values = {key: sweep_values(key, value) for key, value in params.items()}
    for pick in (0, -1):
        swept = copy.deepcopy(cfg)
        for key, options in values.items():
            if "." in key:
                OmegaConf.update(swept, key, options[0][pick], merge=False)
        validate(swept)
    for key, options in values.items():
        if "." not in key:  # a config group (algorithm=..., experiment/.../method@_global_=...)
            for option in options[1]:
                group_cfg, _ = compose_preset(name, [f"{key}={option}"])
                one_step(validate(group_cfg))


def test_swept_keys_with_slashes_stay_out_of_job_directory_names():
    # the sweep subdir is built from the overrides: a key holding "/" would nest job directories
    excluded = set(OmegaConf.load(CONF / "config.yaml").hydra.job.config.override_dirname.exclude_keys)
    slashed = set()
    for name in PRESETS:
        params = OmegaConf.load(EXPERIMENTS / f"{name}.yaml").get("hydra", {}).get("sweeper", {}).get("params", {})
        slashed |= {key.split("@")[0] for key in params if "/" in key}  # Hydra matches the group, not @package
    assert slashed and slashed <= excluded, slashed - excluded


def test_resuming_a_sweep_finds_the_same_job_directories():
    # a preempted sweep is continued by rerunning its command with resume=true: the job directory
    # names must not change, or every job would start again from scratch in a new folder
    def job_dirname(extra):
        cfg = compose(["experiment=shibuya2023/fmnist/drl_0.5m", "seed=2", *extra], return_hydra_config=True)
        return cfg.hydra.job.override_dirname

    assert job_dirname([]) == "seed=2"
    assert job_dirname(["resume=true", "trainer.checkpoint=true", "trainer.device=cpu"]) == "seed=2"
    # nor where the data lives or where metrics are logged (a resume on another node or with W&B)
    assert job_dirname(["dataset.root=/scratch/data", "dataset.download=false", "logger=wandb"]) == "seed=2"


@pytest.mark.parametrize("name", ["bartunov2018/mnist_fc/dtp_parallel", "bartunov2018/cifar_lc/sdtp_alternating",
                                  "bartunov2018/mnist_lc/ao_sdtp_parallel"])
def test_bartunov_layer_loss_has_no_half(name):
    # the paper's layer loss is ‖f(h_l) − ĥ_{l+1}‖² (and Lee's code sums it over features, mean over
    # the batch); the algorithms' own default is ½‖·‖²
    cfg = compose([f"experiment={name}"])
    assert (cfg.algorithm.local_loss_scale, cfg.algorithm.local_loss_reduction) == (1.0, "batch_mean")
    assert compose(["algorithm=dtp"]).algorithm.local_loss_scale == 0.5


SEARCHES = [p for p in PRESETS if "/search/" in p]


@pytest.mark.parametrize("name", SEARCHES)
def test_search_trial_folders_are_named_by_number(name):
    # 8 searched values at full precision would make ${hydra.job.override_dirname} longer than the
    # 255-character file-name limit, and the first trial would crash
    cfg = compose([f"experiment={name}"], return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"] == "${hydra.job.num}"


def test_investigation_dtp_uses_rmsprop_in_both_pathways_when_asked():
    # "the learning algorithm is RMSProp in both the cases" (5.7); 5.5 sets the two apart
    both = compose(["experiment=investigation2019/pca", "algorithm.optimizer.name=rmsprop"]).algorithm
    assert (both.optimizer.name, both.feedback_optimizer.name, both.optimizer.alpha) == ("rmsprop", "rmsprop", 0.9)
    mixed = compose(["experiment=investigation2019/mixed_optimizers", "algorithm.optimizer.name=rmsprop",
                     "algorithm.feedback_optimizer.name=adam"]).algorithm
    assert (mixed.optimizer.name, mixed.feedback_optimizer.name) == ("rmsprop", "adam")


SHIBUYA_CELLS = [p for p in PRESETS if p.startswith("shibuya2023/") and p.count("/") == 2
                 and "/search/" not in p and "/sensitivity/" not in p and not p.endswith("_bn")]


def assert_search_matches_cell(cell: str, search: str):
    """A cell's hyperparameters come from a validation search of the same net, data and algorithm;
    returns the search's sweeper params."""
    assert search in PRESETS
    cell_cfg, search_cfg = compose([f"experiment={cell}"]), compose([f"experiment={search}"])
    assert search_cfg.arch == cell_cfg.arch
    assert search_cfg.dataset == cell_cfg.dataset
    assert search_cfg.algorithm.name == cell_cfg.algorithm.name
    assert search_cfg.trainer.batch_size == cell_cfg.trainer.batch_size
    assert search_cfg.trainer.val_size > 0 and cell_cfg.trainer.val_size == 0
    hydra_cfg = compose([f"experiment={search}"], return_hydra_config=True).hydra
    for key in hydra_cfg.sweeper.params:
        assert OmegaConf.select(cell_cfg, key) is not None, key
    return hydra_cfg.sweeper.params


@pytest.mark.parametrize("cell", SHIBUYA_CELLS)
def test_shibuya_cell_has_a_search_on_its_own_net_and_dataset(cell):
    col, row = cell.split("/")[1:]
    assert_search_matches_cell(cell, f"shibuya2023/search/{row}" if col == "fmnist" else f"shibuya2023/search/{col}/{row}")


@pytest.mark.parametrize("col", ["mnist", "fmnist"])
def test_ernoult_lenet_l_drl_search_differs_from_its_cell_only_in_what_it_searches(col):
    # no MNIST-like L-DRL values were published; the search keeps the CIFAR-10 feedback values
    cell, search = f"ernoult2022/lenet_{col}/l_drl", f"ernoult2022/search/lenet_{col}/l_drl"
    params = assert_search_matches_cell(cell, search)
    assert set(params) == {"algorithm.optimizer.lr", "algorithm.target_step"}
    pinned = [f"{key}=0.123" for key in params]
    assert compose([f"experiment={search}", *pinned]).algorithm == compose([f"experiment={cell}", *pinned]).algorithm
