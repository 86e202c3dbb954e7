"""Batched runs (trainer.parallel_runs=K) against the same K seeds run one by one.

Tolerance: in float64, every metric and every final weight of run k agrees with seed k run alone
to a relative 1e-9 (weights: or 1e-10 absolute; batched matrix products round differently from single ones; nothing else
differs: the same data order, noise and initial weights per seed). Error rates are equal."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import read_metrics, run_config, tiny_overrides

from dtp_bench.parallel import ParallelTrainer, run_folders
from dtp_bench.trainer import CHECKPOINT, SUMMARY

RUNS, SEED = 3, 4

CASES = {
    "bp": ("bp", []),
    "fa": ("fa", []),
    "dfa": ("dfa", []),
    "tp": ("tp", []),
    "dtp": ("dtp", []),
    "dtp_alternating_pretrained": ("dtp", ["algorithm.schedule=alternating", "algorithm.feedback_pretrain_epochs=1"]),
    "sdtp": ("sdtp", []),
    "ao_sdtp": ("ao_sdtp", []),
    "fw_dtp": ("fw_dtp", []),
    "fw_dtp_batch_norm": ("fw_dtp", ["arch.batch_norm=true", "algorithm.target_batch_norm=true"]),
    "drl": ("drl", []),
    "scaling_dtp": ("scaling_dtp", ["algorithm.feedback_iterations=2"]),
    "scaling_dtp_literal_loss": ("scaling_dtp", ["algorithm.feedback_iterations=2", "algorithm.lockstep=false"]),
    "l_drl": ("l_drl", []),
    "bp_frozen_val_augmented": ("bp", ["trainer.frozen_blocks=[0]", "trainer.val_size=16",
                                       "dataset.augment.crop_padding=2", "dataset.augment.hflip=true"]),
}

CONV = ["arch=conv", "arch.layers=[[3,4,2],[3,6,2]]", "arch.fc_hidden=[16]"]  # SAME padding: a ZeroPad2d first
LENET = ["arch=lenet", "arch.channels=[4,6]", "arch.fc_hidden=[16]"]  # conv, ELU, max pooling
VGG = ["arch=vgg", "arch.channels=[4,4,6,6,8]"]  # 28 x 28 padded to 32 x 32, five poolings
LC = ["arch=lc", "arch.layers=[[3,4,2],[3,6,2]]", "arch.fc_hidden=[16]"]  # locally connected, SAME padding
CONV_CASES = {
    "conv_bp": ("bp", CONV), "conv_fa": ("fa", CONV), "conv_dfa": ("dfa", CONV), "conv_dtp": ("dtp", CONV),
    "conv_ao_sdtp": ("ao_sdtp", CONV),
    "lenet_bp": ("bp", LENET), "lenet_fa": ("fa", LENET), "lenet_fw_dtp": ("fw_dtp", LENET),
    "lenet_drl": ("drl", LENET),
    "lenet_scaling_dtp": ("scaling_dtp", [*LENET, "algorithm.feedback_iterations=2"]),  # closed-form conv step
    "lenet_scaling_dtp_literal_loss": ("scaling_dtp", [*LENET, "algorithm.feedback_iterations=2", "algorithm.lockstep=false"]),
    "vgg_scaling_dtp": ("scaling_dtp", VGG),
    "lc_bp": ("bp", LC), "lc_fa": ("fa", LC), "lc_dfa": ("dfa", LC), "lc_dtp": ("dtp", LC),
    "lc_ao_sdtp": ("ao_sdtp", LC), "lc_fw_dtp": ("fw_dtp", LC),
}


def _overrides(root, algorithm, extra, epochs=2):
    base = tiny_overrides(root, epochs=epochs, algorithm=algorithm)
    if any(o.startswith("arch=") for o in extra):  # another arch: drop the fc one
        base = [o for o in base if not o.startswith("arch")]
    return base + ["trainer.precision=fp64", *extra]


def _final_weights(run_dir):
    return torch.load(run_dir / CHECKPOINT, weights_only=True)["algorithm"]["modules"]


def assert_same_run(batched, single):
    rows_b, rows_s = read_metrics(batched), read_metrics(single)
    assert len(rows_b) == len(rows_s)
    for rb, rs in zip(rows_b, rows_s):
        assert rb.keys() == rs.keys()
        for key, value in rs.items():
            if key == "learning_signal":
                continue
            if isinstance(value, float):
                assert rb[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
            else:
                assert rb[key] == value, key
    wb, ws = _final_weights(batched), _final_weights(single)
    assert wb.keys() == ws.keys()
    for key, value in ws.items():
        assert wb[key].shape == value.shape, key
        torch.testing.assert_close(wb[key], value, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", list(CASES) + list(CONV_CASES))
def test_batched_runs_equal_the_runs_one_by_one(data_root, tmp_path, case):
    algorithm, extra = {**CASES, **CONV_CASES}[case]
    overrides = _overrides(data_root, algorithm, extra)
    run_config(overrides + [f"seed={SEED}", f"trainer.parallel_runs={RUNS}"], tmp_path / "batched")
    for k, folder in enumerate(run_folders(tmp_path / "batched", SEED, RUNS)):
        run_config(overrides + [f"seed={SEED + k}"], tmp_path / f"single{k}")
        assert_same_run(folder, tmp_path / f"single{k}")
        summary = json.loads((folder / SUMMARY).read_text())
        assert summary["status"] == "completed" and summary["seed"] == SEED + k
        assert summary["parallel"]["runs"] == RUNS


def test_an_interrupt_while_the_runs_checkpoint_waits_until_all_have(data_root, tmp_path, monkeypatch):
    """SIGINT arrives while the second run writes its epoch-1 checkpoint: the others still write
    theirs, then the job stops (exit 130); resume=true continues all runs to the uninterrupted
    job's numbers, with every random state from the checkpoints (the rebuilt models are seeded
    differently)."""
    import signal

    from dtp_bench import parallel
    from dtp_bench.parallel import RunRecord

    overrides = _overrides(data_root, "scaling_dtp", ["algorithm.feedback_iterations=2"], epochs=3) + [
        f"seed={SEED}", f"trainer.parallel_runs={RUNS}", "dataset.augment.crop_padding=2"]
    run_config(overrides, tmp_path / "straight")

    save = RunRecord.save_checkpoint

    def save_interrupted_once(self):
        if self.run == 1 and len(self.history) == 1:
            signal.raise_signal(signal.SIGINT)
        save(self)

    monkeypatch.setattr(RunRecord, "save_checkpoint", save_interrupted_once)
    # Ctrl-C raises KeyboardInterrupt, as in a terminal (a job started in the background by a shell
    # inherits SIGINT ignored, and Python then installs no handler)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stopped:
            run_config(overrides, tmp_path / "resumed")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.code == 130
    folders = run_folders(tmp_path / "resumed", SEED, RUNS)
    assert [len(read_metrics(f)) for f in folders] == [1] * RUNS
    assert all(json.loads((f / SUMMARY).read_text())["status"] == "interrupted" for f in folders)
    monkeypatch.setattr(RunRecord, "save_checkpoint", save)
    seed_everything = parallel.seed_everything
    monkeypatch.setattr(parallel, "seed_everything", lambda seed: seed_everything(seed + 1000))
    run_config(overrides + ["resume=true"], tmp_path / "resumed")
    for straight, resumed in zip(run_folders(tmp_path / "straight", SEED, RUNS), folders):
        assert read_metrics(resumed) == read_metrics(straight)
        for key, value in _final_weights(straight).items():
            assert torch.equal(_final_weights(resumed)[key], value), key


def test_a_batched_runs_checkpoint_resumes_as_a_single_run(data_root, tmp_path):
    overrides = _overrides(data_root, "fa", [], epochs=2)
    run_config(overrides + [f"seed={SEED}", f"trainer.parallel_runs={RUNS}"], tmp_path / "batched")
    run_config(overrides + [f"seed={SEED + 1}", "trainer.epochs=3"], tmp_path / "single")
    folder = run_folders(tmp_path / "batched", SEED, RUNS)[1]
    run_config(overrides + [f"seed={SEED + 1}", "trainer.epochs=3", "resume=true"], folder)
    assert_same_run(folder, tmp_path / "single")


def test_a_diverged_run_is_recorded_and_the_others_go_on(data_root, tmp_path, monkeypatch):
    train_epoch = ParallelTrainer.train_epoch

    def then_overflow_run_1(self, epoch):
        rows = train_epoch(self, epoch)
        with torch.no_grad():
            next(self.algorithm.network.parameters())[1].view(-1)[0] = float("inf")
        return rows

    monkeypatch.setattr(ParallelTrainer, "train_epoch", then_overflow_run_1)
    overrides = _overrides(data_root, "dtp", [])
    run_config(overrides + [f"seed={SEED}", f"trainer.parallel_runs={RUNS}"], tmp_path / "batched")
    monkeypatch.setattr(ParallelTrainer, "train_epoch", train_epoch)
    folders = run_folders(tmp_path / "batched", SEED, RUNS)
    summaries = [json.loads((f / SUMMARY).read_text()) for f in folders]
    assert [(s["status"], s["diverged_epoch"]) for s in summaries] == [
        ("completed", None), ("diverged", 1), ("completed", None)]
    for k in (0, 2):
        run_config(overrides + [f"seed={SEED + k}"], tmp_path / f"single{k}")
        assert_same_run(folders[k], tmp_path / f"single{k}")


@pytest.mark.parametrize("extra, message", [
    (["diagnostics.every_n_steps=5"], "diagnostics.every_n_steps: the alignment diagnostics measure one model"),
    (["logger=wandb"], "logger: W&B logs one run per process"),
])
def test_what_cannot_be_batched_is_refused(data_root, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as stopped:
        base = [o for o in tiny_overrides(data_root) if not (extra[0].startswith("arch") and o.startswith("arch"))]
        run_config(base + ["trainer.parallel_runs=2", *extra], tmp_path)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_the_runs_folders_read_as_single_runs(data_root, tmp_path):
    """The report groups a batched job's runs like seeds run one by one."""
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "scripts"))
    import report

    run_config(tiny_overrides(data_root, epochs=1) + ["seed=7", "trainer.parallel_runs=2"], tmp_path / "job")
    runs = report.find_runs([tmp_path / "job"])
    assert len(runs) == 2
    configs = [report._load_yaml(r.path / ".hydra" / "config.yaml") for r in runs]
    assert sorted(c["seed"] for c in configs) == [7, 8]
    assert all(c["trainer"]["parallel_runs"] == 1 for c in configs)
    assert not (tmp_path / "job" / SUMMARY).exists()  # the job's folder is not a run of its own
