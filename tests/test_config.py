"""Every option composes; bad overrides stop the run before training with a message naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF, compose, train_py
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from dtp_bench.config import ConfigError, validate

GROUPS = ("algorithm", "arch", "dataset", "trainer", "logger")  # experiment presets: test_presets.py


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL_OPTIONS = [(g, o) for g in GROUPS for o in _options(g)]


def test_the_menu_is_there():
    """The groups this project promises; new YAML files are picked up by the tests below."""
    assert {"bp"} <= set(_options("algorithm"))
    assert {"mnist", "fmnist", "cifar10", "cifar100", "imagenet32"} <= set(_options("dataset"))
    assert {"fc"} <= set(_options("arch"))
    assert {"none", "wandb"} <= set(_options("logger"))


def test_default_config_is_valid():
    typed = validate(compose())
    assert typed.dataset.name == "fmnist" and typed.algorithm.name == "fw_dtp" and typed.arch.name == "fc"


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_validates(group, option):
    cfg = compose([f"{group}={option}"])
    validate(cfg)


def _spec_pairs(kind: str) -> list[tuple[str, str]]:
    """conf/spec/algorithm_<other>/<algorithm>_<other>.yaml → (algorithm, other); names may hold '_'."""
    other_group = kind.split("_", 1)[1]
    algorithms, others = set(_options("algorithm")), set(_options(other_group))
    pairs = []
    for stem in _options(f"spec/{kind}"):
        split = [(stem[:i], stem[i + 1:]) for i, c in enumerate(stem) if c == "_"]
        match = [(a, o) for a, o in split if a in algorithms and o in others]
        assert match, f"conf/spec/{kind}/{stem}.yaml matches no (algorithm, {other_group}) pair"
        pairs.append(match[0])
    return pairs


SPEC_CASES = ([("arch", a, o) for a, o in _spec_pairs("algorithm_arch")]
              + [("dataset", a, o) for a, o in _spec_pairs("algorithm_dataset")])


@pytest.mark.parametrize("group,algorithm,other", SPEC_CASES,
                         ids=[f"{a}-{o}" for _, a, o in SPEC_CASES] or None)
def test_every_spec_file_composes(group, algorithm, other):
    validate(compose([f"algorithm={algorithm}", f"{group}={other}"]))


def test_launchers_compose():
    joblib = compose(["hydra/launcher=joblib"], return_hydra_config=True)
    assert "joblib" in joblib.hydra.launcher._target_.lower()
    options = sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))
    assert "slurm_example" in options
    for option in options:
        cfg = compose([f"hydra/launcher={option}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_


# ---------------------------------------------------------------- errors Hydra raises at compose time
@pytest.mark.parametrize("override,key", [
    ("trainer.epoch=3", "trainer.epoch"),  # unknown key (typo)
    ("algorithm.optimizer.learning_rate=0.1", "learning_rate"),
    ("trainer.batch_size=abc", "trainer.batch_size"),  # wrong type
    ("trainer.checkpoint=maybe", "trainer.checkpoint"),
    ("dataset.mean=0.5", "dataset.mean"),  # a number where a list is expected
    ("algorithm=nope", "algorithm/nope"),  # unknown group option
    ("dataset=svhn", "dataset/svhn"),
])
def test_compose_rejects(override, key):
    with pytest.raises((HydraException, OmegaConfBaseException)) as err:
        compose([override])
    text = str(err.value) + str(err.value.__cause__ or "")
    assert key in text


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(HydraException) as err:
        compose(["dataset=svhn"])
    assert "fmnist" in str(err.value) and "cifar10" in str(err.value)


# ---------------------------------------------------------------- our validate(): well typed but impossible
@pytest.mark.parametrize("override,key", [
    ("algorithm.optimizer.lr=-0.1", "algorithm.optimizer.lr"),
    ("algorithm.optimizer.lr=0", "algorithm.optimizer.lr"),
    ("algorithm.optimizer.lr=fast", "algorithm.optimizer.lr"),
    ("algorithm.optimizer.name=lbfgs", "algorithm.optimizer.name"),
    ("algorithm.optimizer.momentum=1.5", "algorithm.optimizer.momentum"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.batch_size=-8", "trainer.batch_size"),
    ("trainer.epochs=-1", "trainer.epochs"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
    ("trainer.precision=fp16", "trainer.precision"),
    ("trainer.device=tpu", "trainer.device"),
    ("trainer.progress=sometimes", "trainer.progress"),
    ("trainer.frozen_blocks=[-1]", "trainer.frozen_blocks"),
    ("trainer.frozen_blocks=[0,0]", "trainer.frozen_blocks"),
    ("dataset.std=[0.0]", "dataset.std"),
    ("dataset.mean=[0.1,0.2]", "dataset.mean"),
    ("logger.mode=cloud", "logger.mode"),
    ("seed=-1", "seed"),
    ("arch.hidden=[256,0]", "arch.hidden"),
    ("arch.activation=swish", "arch.activation"),
    ("algorithm=drl algorithm.noise=0", "algorithm.noise"),  # DRL divides by σ²
    ("algorithm=scaling_dtp algorithm.noise=0", "algorithm.noise"),
    ("algorithm=scaling_dtp algorithm.feedback_steps=5", "algorithm.feedback_steps"),  # K is feedback_iterations
    ("algorithm=tp algorithm.feedback=jacobian_transpose algorithm.propagation=plain", "algorithm.propagation"),
    # '+' adds keys Hydra would otherwise reject; validate() still refuses them
    ("+trainer.foo=1", "trainer.foo"),
    ("+algorithm.optimizer.betas=[0.9]", "algorithm.optimizer.betas"),
])
def test_validate_rejects(override, key):
    cfg = compose(override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(f"{key}:") or key in str(err.value)


@pytest.mark.parametrize("overrides,key", [
    (["algorithm=bp", "algorithm.optimizer.lr=[0.1,0.2]"], "algorithm.optimizer.lr"),  # per-layer: TP family only
    (["algorithm=fa", "algorithm.optimizer.lr=[0.1,0.2]"], "algorithm.optimizer.lr"),
    (["trainer.device=cudafoo"], "trainer.device"),
    (["arch=conv", "dataset.pca_components=10"], "arch"),  # incompatible arch × dataset option
    (["algorithm=dtp", "arch.hidden=[]"], "algorithm.first_target"),
    (["trainer.frozen_blocks=[3]"], "trainer.frozen_blocks"),  # arch.hidden=[32,32]: blocks 0..2
    (["arch=lenet", "arch.pool_kernel=64"], "arch"),  # pooling larger than the 28×28 feature maps
    # a 64×64 LC kernel at every pixel: ≈24 GiB of activations at eval batch 1000 (was an OOM kill)
    (["arch=lc", "arch.layers=[[64,8,1]]", "trainer.eval_batch_size=100000"], "arch"),
])
def test_rejected_when_the_run_is_built(data_root, tmp_path, overrides, key):
    from conftest import tiny_overrides

    from dtp_bench.trainer import Trainer

    base = tiny_overrides(data_root, epochs=1)
    if any(o.startswith("arch=") for o in overrides):
        base = [o for o in base if not o.startswith("arch")]
    cfg = compose(base + overrides)
    with pytest.raises(ConfigError) as err:
        Trainer(cfg, validate(cfg), tmp_path)
    assert str(err.value).startswith(f"{key}:")


def test_geometry_estimate_scales_with_the_batch_and_refuses_what_cannot_fit(monkeypatch):
    """The estimate comes from the meta device (nothing allocated): a net that fits at batch 16
    does not at 1000× the batch, and a tiny machine refuses the small net too."""
    import torch

    from dtp_bench import geometry

    cfg = compose(["arch=fc", "arch.hidden=[32,32]"]).arch
    small = geometry.check_geometry(cfg, (1, 28, 28), 10, 16, torch.device("cpu"))
    large = geometry.check_geometry(cfg, (1, 28, 28), 10, 16_000, torch.device("cpu"))
    assert small["parameters"] == 784 * 32 + 32 * 32 + 32 * 10  # the default (FW-DTP) net: no biases
    assert large["estimated_bytes"] > 10 * small["estimated_bytes"]
    monkeypatch.setattr(geometry, "machine_memory_bytes", lambda device: small["estimated_bytes"] - 1)
    with pytest.raises(ConfigError, match=r"^arch: arch=fc on 1×28×28 inputs at batch size 16 needs an estimated"):
        geometry.check_geometry(cfg, (1, 28, 28), 10, 16, torch.device("cpu"))


# ---------------------------------------------------------------- the command line, end to end
def test_cli_bad_value_exits_nonzero_without_traceback(tmp_path: Path):
    result = train_py(["trainer.batch_size=0", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode != 0
    assert "trainer.batch_size" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_cli_unknown_key_exits_nonzero_without_traceback(tmp_path: Path):
    result = train_py(["trainer.batchsize=64", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode != 0
    assert "trainer.batchsize" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_cli_unwritable_output_folder_is_one_line_and_exit_2(tmp_path: Path, mode):
    """A folder under a regular file cannot be created, for root too (a read-only mount, which
    root alone cannot simulate portably, goes the same way: see the errno test below)."""
    (tmp_path / "a_file").write_text("")
    key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    args = (["-m", "seed=1,2"] if mode == "multirun" else []) + [f"{key}={tmp_path / 'a_file' / 'run'}"]
    result = train_py(args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"config error: {key}: cannot write the output folder {tmp_path / 'a_file' / 'run'} (Not a directory); "
        f"point {key}=... at a writable folder"]


def test_read_only_output_folder_says_read_only(tmp_path: Path, monkeypatch, capsys):
    import errno

    from dtp_bench.callbacks import check_writable

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(SystemExit) as exc:
        check_writable(tmp_path / "run", "hydra.run.dir")
    assert exc.value.code == 2
    assert "(the file system is read-only); point hydra.run.dir=..." in capsys.readouterr().err


def test_a_word_where_a_number_belongs_is_called_not_a_number():
    with pytest.raises(ConfigError, match=r"algorithm.optimizer.lr: must be a number \(> 0\), got 'abc'"):
        validate(compose(["algorithm.optimizer.lr=abc"]))
    with pytest.raises(ConfigError, match=r"algorithm.optimizer.lr: must be > 0, got -1"):
        validate(compose(["algorithm.optimizer.lr=-1"]))


def test_a_combination_no_paper_ran_is_noted_not_refused(data_root, tmp_path, capsys):
    from conftest import run_config, tiny_overrides

    from dtp_bench.coverage import outside_papers_notice, paper_combinations

    assert ("fw_dtp", "fc", "fmnist") in paper_combinations()  # read from the presets
    assert ("sdtp", "lc", "cifar10") in paper_combinations()
    assert outside_papers_notice("fw_dtp", "fc", "fmnist") is None
    assert "ran algorithm=sdtp arch=vgg dataset=cifar10" in outside_papers_notice("sdtp", "vgg", "cifar10")
    assert "presets run bp on lenet with cifar10, fmnist, mnist" in outside_papers_notice("bp", "lenet", "imagenet32")

    run_config(tiny_overrides(data_root, dataset="cifar100", epochs=1, algorithm="dfa"), tmp_path / "dfa")
    assert "note: no paper this tool reproduces ran algorithm=dfa arch=fc dataset=cifar100" in capsys.readouterr().err
    run_config(tiny_overrides(data_root, epochs=1), tmp_path / "bp")  # bp, fc, fmnist: a paper's
    assert "note: no paper" not in capsys.readouterr().err


def test_help_lists_options_not_schemas(tmp_path: Path):
    result = train_py(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if ": " in line}
    assert lines["algorithm"].startswith("algorithm: ao_sdtp, bp, dfa,") and "_schema" not in lines["algorithm"]
    assert "_schema" not in result.stdout.split("== Config ==")[0]
    assert "docs/configuration.md" in result.stdout


def test_a_schema_is_not_an_option(data_root, tmp_path: Path):
    from conftest import tiny_overrides

    result = train_py([o for o in tiny_overrides(data_root, epochs=1) if not o.startswith("algorithm=")]
                      + ["algorithm=bp_schema", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "config error: algorithm: 'bp_schema' is the typed schema behind the algorithm options" in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_output_folders_are_named_after_the_preset_or_the_choices():
    from omegaconf import OmegaConf

    from dtp_bench.menu import run_name

    assert run_name("shibuya2023/fmnist/bp", "bp", "fmnist", "fc") == "shibuya2023+fmnist+bp"
    assert run_name(None, "fw_dtp", "fmnist", "fc") == "fw_dtp_fmnist_fc"
    cfg = compose(["experiment=shibuya2023/fmnist/bp"], return_hydra_config=True)
    assert "${dtp_run_name:${hydra.runtime.choices.experiment}" in OmegaConf.to_container(cfg.hydra)["sweep"]["dir"]
