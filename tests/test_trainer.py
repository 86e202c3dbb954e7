"""Run outputs, determinism, resume, divergence and failure handling, on tiny fake data."""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import compose, read_metrics, run_config, tiny_overrides
from omegaconf import OmegaConf

from dtp_bench import run as run_module
from dtp_bench import trainer as trainer_module
from dtp_bench.data import DeviceData
from dtp_bench.run import FAILED_OBJECTIVE, RESUME_ERROR
from dtp_bench.trainer import CHECKPOINT, SUMMARY, Trainer, _config_changes

ROW_FIELDS = {"epoch", "train_loss", "train_error", "test_error", "test_top5_error", "epoch_seconds",
              "examples_per_second", "lr_forward"}
SUMMARY_FIELDS = {"status", "final_test_error", "best_test_error", "final_train_error", "total_seconds",
                  "choices", "seed", "parameters", "device", "torch_version", "diverged_epoch",
                  "epochs_completed", "final_test_top5_error"}


def test_outputs(data_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(data_root, epochs=2)
    overrides.remove("trainer.progress=off")  # auto: no bar, stdout is not a terminal
    objective = run_config(overrides, run_dir)
    out = capsys.readouterr()
    assert "final test error" in out.out and "it/s" not in out.err

    rows = read_metrics(run_dir, drop_timing=False)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        assert "val_error" not in row  # no split held out by default
        assert 0 <= row["test_error"] <= 100 and row["examples_per_second"] > 0
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert SUMMARY_FIELDS <= set(summary), SUMMARY_FIELDS - set(summary)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert summary["final_test_error"] == rows[-1]["test_error"] == objective
    assert summary["best_test_error"] == min(r["test_error"] for r in rows)
    assert summary["final_train_error"] == rows[-1]["train_error"]
    assert summary["final_test_top5_error"] == rows[-1]["test_top5_error"] <= rows[-1]["test_error"]
    assert summary["device"] == "cpu" and summary["torch_version"] == torch.__version__
    assert summary["parameters"]["forward"] == (784 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    assert summary["parameters"]["feedback"] == 0
    assert summary["diverged_epoch"] is None
    # checkpoints are atomic: no temporary file is left behind, and they load without pickle's code path
    assert (run_dir / CHECKPOINT).exists()
    assert not list(run_dir.glob("*.tmp"))
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert state["epochs_completed"] == 2


def _evaluate(logits: torch.Tensor, labels: torch.Tensor, batch_size: int = 2):
    """Trainer.evaluate on fixed logits, served in batches as the data would be."""
    batches = [(logits[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]
    fake = SimpleNamespace(
        typed=SimpleNamespace(trainer=SimpleNamespace(eval_batch_size=batch_size, limit_eval_batches=None)),
        device=torch.device("cpu"), autocast=contextlib.nullcontext(),
        data=SimpleNamespace(eval_batches=lambda split, size, limit: iter(batches)),
        algorithm=SimpleNamespace(predict=lambda x: x))
    return Trainer.evaluate(fake, "test")


def test_top1_and_top5_error():
    # label ranks 1st, 2nd, 5th, 6th and 10th among the 10 logits of its row
    order = torch.arange(10.0).flip(0)  # logits 9, 8, ..., 0: class c ranks (c + 1)th
    logits = order.repeat(5, 1)
    labels = torch.tensor([0, 1, 4, 5, 9])
    top1, top5 = _evaluate(logits, labels)
    assert top1 == pytest.approx(80.0) and top5 == pytest.approx(40.0)
    # five classes or fewer: top-5 error means nothing and is not reported
    assert _evaluate(logits[:, :5], torch.tensor([0, 1, 2, 3, 4])) == (pytest.approx(80.0), None)


def test_validation_split_is_reported(data_root, tmp_path):
    run_dir = tmp_path / "run"
    objective = run_config(tiny_overrides(data_root, epochs=1) + ["trainer.val_size=16"], run_dir)
    (row,) = read_metrics(run_dir)
    assert "val_error" in row
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["final_val_error"] == row["val_error"] == objective


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "cifar100", "imagenet32"])
def test_every_dataset_trains(data_root, tmp_path, dataset):
    run_config(tiny_overrides(data_root, dataset=dataset, epochs=1), tmp_path)
    assert json.loads((tmp_path / SUMMARY).read_text())["status"] == "completed"


def test_determinism(data_root, tmp_path):
    overrides = tiny_overrides(data_root, epochs=2) + ["dataset.augment.hflip=true"]
    run_config(overrides, tmp_path / "a")
    run_config(overrides, tmp_path / "b")
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    run_config(overrides + ["seed=1"], tmp_path / "c")
    assert read_metrics(tmp_path / "a") != read_metrics(tmp_path / "c")


def cosine_lr(lr: float, eta_min: float, t_max: int, completed: int) -> float:
    """CosineAnnealingLR's rate after ``completed`` steps (one per epoch): what a metrics row,
    written before its epoch's ``after_epoch``, reports for epoch ``completed + 1``."""
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * completed / t_max)) / 2


def _run_killed_after_epoch_1_then_resumed(overrides, run_dir, monkeypatch) -> None:
    """Run ``overrides`` in ``run_dir``, killed just after the checkpoint of epoch 1 was written,
    then resumed with ``resume=true`` to the end.

    The resumed process builds its model and algorithm from another seed: everything random that
    the run depends on (fixed feedback matrices included) must come from the checkpoint, not from
    being drawn again identically."""
    save = Trainer.save_checkpoint

    def save_then_die(self):
        save(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(SystemExit):  # recorded as interrupted, exit 130
        run_config(overrides, run_dir)
    assert len(read_metrics(run_dir)) == 1
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    seed_everything = trainer_module.seed_everything
    monkeypatch.setattr(trainer_module, "seed_everything", lambda seed: seed_everything(seed + 1000))
    run_config(overrides + ["resume=true"], run_dir)
    monkeypatch.setattr(trainer_module, "seed_everything", seed_everything)


def test_resume_equals_an_uninterrupted_run(data_root, tmp_path, monkeypatch):
    # a schedule and augmentation, so learning-rate and random-number state must be restored too
    overrides = tiny_overrides(data_root, epochs=3) + [
        "algorithm.optimizer.schedule=cosine", "algorithm.optimizer.cosine_eta_min=1e-4",
        "dataset.augment.crop_padding=2", "trainer.val_size=8"]
    run_config(overrides, tmp_path / "straight")
    # the schedule does step: bp's lr 1e-3 annealed over trainer.epochs=3 epochs down towards 1e-4
    lrs = [r["lr_forward"] for r in read_metrics(tmp_path / "straight")]
    assert lrs == pytest.approx([cosine_lr(1e-3, 1e-4, 3, e) for e in range(3)], rel=1e-9, abs=0)

    _run_killed_after_epoch_1_then_resumed(overrides, tmp_path / "resumed", monkeypatch)
    assert read_metrics(tmp_path / "resumed") == read_metrics(tmp_path / "straight")
    summary = json.loads((tmp_path / "resumed" / SUMMARY).read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3

    # a cosine schedule spans trainer.epochs: adding epochs on resume would make its rate climb back
    with pytest.raises(SystemExit):
        run_config(overrides + ["resume=true", "trainer.epochs=4"], tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / SUMMARY).read_text())["status"] == "completed"  # kept
    assert "cosine schedule was built for 3 epochs" in json.loads((tmp_path / "resumed" / RESUME_ERROR).read_text())["error"]


# resume of the other algorithms: what their checkpoints must also restore (feedback weights and
# fixed feedback matrices, a second optimizer and its schedule, per-batch noise generators seeded
# from the global stream) and where their epochs differ (feedback-only epochs before each forward
# epoch, pre-training before the first one only)
RESUME_CASES = {
    # alternating: a feedback-only epoch before every forward epoch; Adam in both pathways; a step
    # schedule on the forward rate, a cosine one on the feedback rate
    "dtp_alternating": ("dtp", ["algorithm.schedule=alternating", "algorithm.optimizer.lr=1e-3",
                                "algorithm.optimizer.schedule=step", "algorithm.optimizer.step_size=1",
                                "algorithm.optimizer.step_gamma=0.5", "algorithm.feedback_optimizer.lr=2e-3",
                                "algorithm.feedback_optimizer.schedule=cosine",
                                "algorithm.feedback_optimizer.cosine_eta_min=1e-4"]),
    # feedback pre-training before the first forward epoch only, one extra feedback epoch after each
    "drl": ("drl", ["algorithm.feedback_pretrain_epochs=2", "algorithm.extra_feedback_epochs=1"]),
    # SGD with momentum in both pathways, its own noise generators, a forward cosine over 85 epochs
    "scaling_dtp": ("scaling_dtp", ["algorithm.feedback_iterations=2"]),
    # fixed random feedback matrices: buffers, not parameters
    "fa": ("fa", []),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_equals_an_uninterrupted_run_for_other_algorithms(data_root, tmp_path, monkeypatch, case):
    algorithm, extra = RESUME_CASES[case]
    overrides = tiny_overrides(data_root, epochs=3, algorithm=algorithm) + extra
    run_config(overrides, tmp_path / "straight")
    straight = read_metrics(tmp_path / "straight")
    if case == "dtp_alternating":  # both schedules step once per epoch
        assert [r["lr_forward"] for r in straight] == pytest.approx([1e-3 * 0.5 ** e for e in range(3)],
                                                                    rel=1e-9, abs=0)
        assert [r["lr_feedback"] for r in straight] == pytest.approx(
            [cosine_lr(2e-3, 1e-4, 3, e) for e in range(3)], rel=1e-9, abs=0)
    _run_killed_after_epoch_1_then_resumed(overrides, tmp_path / "resumed", monkeypatch)
    assert read_metrics(tmp_path / "resumed") == straight
    # the weights, feedback included, end where the uninterrupted run's did
    end = [torch.load(tmp_path / run / CHECKPOINT, weights_only=True)["algorithm"]["modules"]
           for run in ("straight", "resumed")]
    assert end[0].keys() == end[1].keys()
    assert any(k.startswith("feedback.") for k in end[0])
    for key, value in end[0].items():
        assert torch.equal(value, end[1][key]), key


def test_more_epochs_can_be_added_on_resume(data_root, tmp_path):
    overrides = tiny_overrides(data_root, epochs=2) + ["algorithm.optimizer.schedule=cosine",
                                                       "algorithm.optimizer.cosine_t_max=4"]
    run_config(overrides, tmp_path)
    run_config(overrides + ["resume=true"], tmp_path)  # finished: trains no further
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    # the device may be named otherwise (auto resolves to the same cpu here)
    run_config(overrides + ["resume=true", "trainer.epochs=3", "trainer.device=auto"], tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # the schedule spans cosine_t_max=4 epochs, and the resumed epoch continues it where it was
    assert [r["lr_forward"] for r in rows] == pytest.approx([cosine_lr(1e-3, 0.0, 4, e) for e in range(3)],
                                                            rel=1e-9, abs=0)


def test_resume_without_a_checkpoint_starts_afresh(data_root, tmp_path):
    overrides = tiny_overrides(data_root, epochs=2) + ["trainer.checkpoint=false"]
    run_config(overrides, tmp_path)
    run_config(overrides + ["resume=true"], tmp_path)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]  # not the first attempt's rows again


def test_resume_skips_a_finished_run_without_a_checkpoint(data_root, tmp_path, capsys):
    # trainer.checkpoint=false: the completed summary of the same config says the job is done
    overrides = tiny_overrides(data_root, epochs=2) + ["trainer.checkpoint=false"]
    first = run_config(overrides, tmp_path)
    metrics, summary = (tmp_path / "metrics.jsonl").read_text(), (tmp_path / SUMMARY).read_text()
    capsys.readouterr()
    assert run_config(overrides + ["resume=true"], tmp_path) == first
    assert "nothing to train" in capsys.readouterr().out
    assert (tmp_path / "metrics.jsonl").read_text() == metrics and (tmp_path / SUMMARY).read_text() == summary
    # a longer run, or another config, is not "done": it trains (from scratch: no checkpoint)
    run_config(overrides + ["resume=true", "trainer.epochs=3"], tmp_path)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_a_failed_resume_keeps_the_completed_summary(data_root, tmp_path):
    overrides = tiny_overrides(data_root, epochs=1)
    run_config(overrides, tmp_path)
    before = (tmp_path / SUMMARY).read_text()
    with pytest.raises(SystemExit):
        run_config(overrides + ["resume=true", "algorithm.optimizer.lr=0.5"], tmp_path)
    assert (tmp_path / SUMMARY).read_text() == before
    assert "different configuration" in json.loads((tmp_path / RESUME_ERROR).read_text())["error"]


def test_weights_gone_non_finite_count_as_diverged(data_root, tmp_path, monkeypatch):
    # the loss of the epoch was finite, but its last update overflowed a weight
    train_epoch = Trainer.train_epoch

    def then_overflow(self, epoch):
        row = train_epoch(self, epoch)
        with torch.no_grad():
            next(self.network.parameters()).view(-1)[0] = float("inf")
        return row

    monkeypatch.setattr(Trainer, "train_epoch", then_overflow)
    run_config(tiny_overrides(data_root, epochs=2), tmp_path)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert (summary["status"], summary["diverged_epoch"]) == ("diverged", 1)


def test_bf16_autocast_sees_weights_updated_inside_a_step(data_root, tmp_path):
    # feedback updated before targets, K feedback iterations: a weight changed inside one autocast
    # block must be read anew (autocast's weight cache would keep the stale bf16 copy)
    trainer = Trainer(*_typed(tiny_overrides(data_root, epochs=1) + ["trainer.precision=bf16"]), tmp_path)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with trainer.autocast:
        before = layer(x)
        with torch.no_grad():
            layer.weight.add_(1.0)
        after = layer(x)
    assert not torch.equal(before, after)


def test_deterministic_setting_does_not_leak_to_the_next_job(data_root, tmp_path):
    Trainer(*_typed(tiny_overrides(data_root, epochs=1) + ["trainer.deterministic=true"]), tmp_path / "a")
    assert torch.are_deterministic_algorithms_enabled()
    Trainer(*_typed(tiny_overrides(data_root, epochs=1)), tmp_path / "b")
    assert not torch.are_deterministic_algorithms_enabled()


def _typed(overrides: list[str]):
    from conftest import compose

    from dtp_bench.config import validate

    cfg = compose(overrides)
    return cfg, validate(cfg)


def test_resume_refuses_another_config(data_root, tmp_path, capsys):
    overrides = tiny_overrides(data_root, epochs=1)
    run_config(overrides, tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_config(overrides + ["resume=true", "algorithm.optimizer.lr=0.1"], tmp_path)
    assert exc.value.code != 0
    assert "different configuration (algorithm.optimizer.lr differ)" in capsys.readouterr().err


def test_resume_with_another_thread_count_warns(data_root, tmp_path, capsys):
    """BLAS sums split by thread: a continuation on another thread count is valid but not
    bit-identical, which the user is told (and how to avoid it)."""
    overrides = tiny_overrides(data_root, epochs=2)
    threads = torch.get_num_threads()
    run_config(overrides + ["trainer.epochs=1"], tmp_path)
    torch.set_num_threads(threads + 1)
    try:
        capsys.readouterr()
        run_config(overrides + ["resume=true", "trainer.epochs=1"], tmp_path)  # same epochs: finished run
        assert "CPU threads" not in capsys.readouterr().err  # nothing resumed, nothing to warn about
        run_config(overrides + ["resume=true"], tmp_path)  # one more epoch on another thread count
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert f"written with {threads} CPU threads and this run has {threads + 1}" in err
    assert f"OMP_NUM_THREADS={threads}" in err


def test_resume_may_read_the_data_from_elsewhere(data_root, tmp_path):
    # a resumed cluster job may find its data on another node's scratch disk
    overrides = tiny_overrides(data_root, epochs=1)
    run_config(overrides, tmp_path / "run")
    moved = tmp_path / "moved_data"
    shutil.copytree(data_root, moved)
    resumed = tiny_overrides(moved, epochs=2) + ["resume=true"]
    run_config(resumed, tmp_path / "run")
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_checkpoints_of_the_nested_fingerprint_format_still_resume():
    # checkpoints written before the fingerprint was flattened stored the nested config
    cfg = OmegaConf.create({"seed": 1, "resume": True, "trainer": {"epochs": 5, "batch_size": 8},
                            "dataset": {"name": "fmnist", "root": "/a"}})
    nested = json.dumps({"seed": 1, "trainer": {"batch_size": 8}, "dataset": {"name": "fmnist", "root": "/b"}})
    assert _config_changes(nested, cfg) == []
    assert _config_changes(nested, OmegaConf.merge(cfg, {"trainer": {"batch_size": 4}})) == ["trainer.batch_size"]
    # a preset's paper value or note corrected after the run started only labels the run
    flat = json.dumps({"seed": 1, "trainer.batch_size": 8, "dataset.name": "fmnist", "reference.value": 2.86,
                       "reference.note": "old"})
    relabelled = OmegaConf.merge(cfg, {"reference": {"value": 2.66, "note": "new"}})
    assert _config_changes(flat, relabelled) == []


def test_checkpoints_older_than_a_config_key_resume_while_it_keeps_the_old_behaviour():
    stored = json.dumps({"seed": 1, "trainer.batch_size": 8, "arch.batch_norm": False})
    cfg = OmegaConf.create({"seed": 1, "trainer": {"batch_size": 8, "frozen_blocks": []},
                            "arch": {"batch_norm": False, "batch_norm_eps": 1e-5}})
    assert _config_changes(stored, cfg) == []
    changed = OmegaConf.merge(cfg, {"trainer": {"frozen_blocks": [0]}, "arch": {"batch_norm_eps": 1e-24}})
    assert _config_changes(stored, changed) == ["arch.batch_norm_eps", "trainer.frozen_blocks"]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(data_root, tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"history": _RunsCode(marker)}, tmp_path / CHECKPOINT)
    with pytest.raises(SystemExit) as exc:
        run_config(tiny_overrides(data_root, epochs=1) + ["resume=true"], tmp_path)
    assert exc.value.code != 0
    assert CHECKPOINT in capsys.readouterr().err
    assert not marker.exists()


def test_nan_loss_means_diverged(data_root, tmp_path, monkeypatch, capsys):
    """A loss that turns NaN in epoch 2 ends the run as 'diverged' with a normal return (exit 0)."""
    train_batches = DeviceData.train_batches
    epochs = {"started": 0}

    def poisoned(self, *args, **kwargs):
        epochs["started"] += 1
        for x, y in train_batches(self, *args, **kwargs):
            yield (x * math.nan if epochs["started"] >= 2 else x), y

    monkeypatch.setattr(DeviceData, "train_batches", poisoned)
    objective = run_config(tiny_overrides(data_root, epochs=3), tmp_path)
    assert objective == FAILED_OBJECTIVE
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 2
    assert summary["epochs_completed"] == 1 and summary["final_test_error"] is not None
    rows = read_metrics(tmp_path)
    assert len(rows) == 2 and rows[1]["test_error"] is None and rows[1]["train_loss"] is None  # JSON null
    # the diverged epoch's training time is part of the run's time
    seconds = [row["epoch_seconds"] for row in read_metrics(tmp_path, drop_timing=False)]
    assert summary["total_seconds"] == pytest.approx(sum(seconds)) and seconds[1] > 0
    assert "diverged" in capsys.readouterr().out
    assert "diverged: training loss" in (tmp_path / trainer_module.TRAIN_LOG).read_text()  # the warning too


def test_huge_learning_rate_diverges(data_root, tmp_path):
    run_config(tiny_overrides(data_root, epochs=2) + [
        "algorithm.optimizer.name=sgd", "algorithm.optimizer.lr=1e30", "arch.activation=relu"], tmp_path)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1


def test_missing_data_exits_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_config(tiny_overrides(tmp_path / "empty", dataset="mnist"), tmp_path / "run")
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "data error" in err and "train-images-idx3-ubyte" in err and str(tmp_path / "empty") in err
    assert json.loads((tmp_path / "run" / SUMMARY).read_text())["status"] == "failed"


def test_crash_in_a_sweep_is_recorded_and_the_sweep_goes_on(data_root, tmp_path, monkeypatch):
    def crash(self, epoch):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Trainer, "train_epoch", crash)
    # a single run re-raises (the traceback is the useful output for a bug)...
    with pytest.raises(RuntimeError):
        run_config(tiny_overrides(data_root, epochs=1), tmp_path / "single")
    assert json.loads((tmp_path / "single" / SUMMARY).read_text())["status"] == "failed"
    # ...a sweep job records it and returns, so the launcher goes on with the other jobs
    context = run_module._hydra_context
    monkeypatch.setattr(run_module, "_hydra_context", lambda: (*context()[:2], True))
    assert run_config(tiny_overrides(data_root, epochs=1), tmp_path / "job") == FAILED_OBJECTIVE
    summary = json.loads((tmp_path / "job" / SUMMARY).read_text())
    assert summary["status"] == "failed" and "simulated bug" in summary["error"]



def test_a_resumed_run_logs_to_the_same_wandb_run(data_root, tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        summary: dict = {}

        def log(self, row, step):
            pass

        def finish(self):
            pass

    fake = SimpleNamespace(init=lambda **kw: calls.append(kw) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    overrides = tiny_overrides(data_root, epochs=1) + ["logger=wandb", "logger.mode=disabled"]
    run_config(overrides, tmp_path)
    run_config(overrides + ["resume=true", "trainer.epochs=2"], tmp_path)
    run_config(overrides, tmp_path / "other")
    assert calls[0]["id"] == calls[1]["id"] != calls[2]["id"]
    assert calls[1]["resume"] == "allow"


@pytest.mark.parametrize("algorithm,extra", [
    ("bp", ["algorithm.optimizer.weight_decay=0.1"]),  # weight decay must not move them either
    ("fa", []), ("dtp", []), ("fw_dtp", []), ("drl", ["algorithm.feedback_pretrain_epochs=0"]),
    ("scaling_dtp", ["algorithm.feedback_iterations=1"]),
])
def test_frozen_blocks_keep_their_initial_weights(data_root, tmp_path, algorithm, extra):
    """trainer.frozen_blocks: those blocks end exactly where they started, the others move (the
    initial weights are read from the checkpoint of a 1-epoch run with the whole net frozen)."""
    base = tiny_overrides(data_root, epochs=1, algorithm=algorithm) + extra + ["trainer.limit_train_batches=4"]
    runs = {"start": "[0,1,2]", "partly": "[0,1]"}
    weights = {}
    for name, frozen in runs.items():
        run_config(base + [f"trainer.frozen_blocks={frozen}"], tmp_path / name)
        state = torch.load(tmp_path / name / CHECKPOINT, weights_only=True)["algorithm"]["modules"]
        weights[name] = {k: v for k, v in state.items() if k.startswith("network.")}
    moved = {k for k, v in weights["partly"].items() if not torch.equal(v, weights["start"][k])}
    assert moved and all(k.startswith("network.blocks.2.") for k in moved), sorted(moved)


def test_train_log_has_the_config_and_one_line_per_epoch(data_root, tmp_path):
    run_dir = tmp_path / "run"
    run_config(tiny_overrides(data_root, epochs=2) + ["trainer.val_size=16"], run_dir)
    text = (run_dir / trainer_module.TRAIN_LOG).read_text()
    assert "config:" in text and "batch_size: 16" in text  # the resolved config, at the start
    epoch_lines = [line for line in text.splitlines() if "] - epoch " in line or "] epoch " in line]
    assert len(epoch_lines) == 2, text
    assert all(k in epoch_lines[-1] for k in ("epoch 2/2", "train loss", "val error", "test error", "lr_forward", " s"))
    # a second run in the same process does not write into the first run's log
    run_config(tiny_overrides(data_root, epochs=1), tmp_path / "other")
    assert (run_dir / trainer_module.TRAIN_LOG).read_text() == text



def test_a_run_dir_in_use_by_another_process_is_refused(data_root, tmp_path, capsys):
    import fcntl

    run_config(tiny_overrides(data_root, epochs=1), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with open(tmp_path / run_module.LOCK, "a") as other:  # another process training into the folder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit) as exit_info:
            run_config(tiny_overrides(data_root, epochs=2), tmp_path)
        assert exit_info.value.code == 2
        assert "in use by another training process" in capsys.readouterr().err
        context = run_module._hydra_context  # in a sweep: the job fails, the sweep goes on
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(run_module, "_hydra_context", lambda: (*context()[:2], True))
            assert run_config(tiny_overrides(data_root, epochs=2), tmp_path) == FAILED_OBJECTIVE
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # nothing touched
    run_config(tiny_overrides(data_root, epochs=2), tmp_path)  # released: the folder is usable again
    assert len(read_metrics(tmp_path)) == 2


@pytest.mark.parametrize("how,code", [("sigint", 130), ("sigterm", 143)])
def test_an_interrupted_run_is_recorded_and_resumes(data_root, tmp_path, monkeypatch, capsys, how, code):
    import os
    import signal

    overrides = tiny_overrides(data_root, epochs=3)
    run_config(overrides, tmp_path / "straight")
    train_epoch = Trainer.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        if epoch == 1:
            if how == "sigint":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_2)
    with pytest.raises(SystemExit) as exit_info:
        run_config(overrides, tmp_path / "run")
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert "interrupted by SIG" in err and "resume=true" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was restored, not left raising
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    run_config(overrides + ["resume=true"], tmp_path / "run")
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "straight")


def _flip_bytes(path, count=64):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_checkpoint_is_refused_not_resumed(data_root, tmp_path, monkeypatch, capsys):
    overrides = tiny_overrides(data_root, epochs=3)
    with pytest.raises(SystemExit):  # interrupted after epoch 1's checkpoint
        _interrupt_after_epoch_1(overrides, tmp_path, monkeypatch)
    monkeypatch.undo()
    assert (tmp_path / trainer_module.CHECKPOINT_HASH).exists()
    _flip_bytes(tmp_path / CHECKPOINT)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_config(overrides + ["resume=true"], tmp_path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is corrupt" in err and "resume=false" in err and "Traceback" not in err


def test_checkpoint_contents_are_checked(data_root, tmp_path, monkeypatch, capsys):
    overrides = tiny_overrides(data_root, epochs=3)
    with pytest.raises(SystemExit):
        _interrupt_after_epoch_1(overrides, tmp_path, monkeypatch)
    monkeypatch.undo()
    path = tmp_path / CHECKPOINT
    good = torch.load(path, weights_only=True)
    bad_cases = {
        "lacks history": {k: v for k, v in good.items() if k != "history"},
        "epochs of metrics": {**good, "epochs_completed": 2},
        "does not fit this model": {**good, "algorithm": {**good["algorithm"], "modules": {
            k: v[:1] for k, v in good["algorithm"]["modules"].items()}}},
        "non-finite weights": {**good, "algorithm": {**good["algorithm"], "modules": {
            k: v * math.inf for k, v in good["algorithm"]["modules"].items()}}},
    }
    for message, state in bad_cases.items():
        torch.save(state, path)
        (tmp_path / trainer_module.CHECKPOINT_HASH).unlink(missing_ok=True)  # hand-edited: no hash
        capsys.readouterr()
        with pytest.raises(SystemExit):
            run_config(overrides + ["resume=true"], tmp_path)
        assert message in capsys.readouterr().err, message


def _interrupt_after_epoch_1(overrides, run_dir, monkeypatch):
    save = Trainer.save_checkpoint

    def save_then_die(self):
        save(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    run_config(overrides, run_dir)


def test_a_fresh_run_into_an_old_folder_drops_its_checkpoint(data_root, tmp_path):
    run_config(tiny_overrides(data_root, epochs=2), tmp_path)
    run_config(tiny_overrides(data_root, epochs=1) + ["trainer.checkpoint=false"], tmp_path)
    assert not (tmp_path / CHECKPOINT).exists() and not (tmp_path / trainer_module.CHECKPOINT_HASH).exists()


def test_a_config_error_rerun_keeps_a_completed_summary(data_root, tmp_path):
    run_config(tiny_overrides(data_root, epochs=1), tmp_path)
    before = (tmp_path / SUMMARY).read_text()
    with pytest.raises(SystemExit):
        run_config(tiny_overrides(data_root, epochs=1) + ["algorithm.optimizer.lr=-1"], tmp_path)
    assert (tmp_path / SUMMARY).read_text() == before
    assert "algorithm.optimizer.lr" in json.loads((tmp_path / RESUME_ERROR).read_text())["error"]


def test_a_full_disk_leaves_no_temp_files_and_a_final_status(data_root, tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    real_save = torch.save

    def half_written_then_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"x" * 1000)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_written_then_full)
    with pytest.raises(OSError):
        run_config(tiny_overrides(data_root, epochs=2), tmp_path / "single")
    assert not list((tmp_path / "single").glob("*.tmp"))
    assert json.loads((tmp_path / "single" / SUMMARY).read_text())["status"] == "failed"
    context = run_module._hydra_context  # in a sweep the error stays inside the job
    monkeypatch.setattr(run_module, "_hydra_context", lambda: (*context()[:2], True))
    assert run_config(tiny_overrides(data_root, epochs=2), tmp_path / "job") == FAILED_OBJECTIVE
    assert json.loads((tmp_path / "job" / SUMMARY).read_text())["status"] == "failed"
    monkeypatch.setattr(torch, "save", real_save)


def test_debug_overfit_fits_two_fixed_batches(data_root, tmp_path):
    """debug=overfit trains on the same two batches every epoch; BP must fit them (train error 0)."""
    overrides = [o for o in tiny_overrides(data_root) if not o.startswith("trainer.epochs")]
    run_config(overrides + ["debug=overfit", "trainer.epochs=40", "algorithm.optimizer.lr=0.01"], tmp_path / "of")
    rows = read_metrics(tmp_path / "of")
    assert len(rows) == 40 and rows[-1]["train_error"] == 0.0 and rows[0]["train_error"] > 0.0

    from dtp_bench.config import validate
    from dtp_bench.data import DeviceData

    typed = validate(compose(overrides + ["debug=overfit"]))
    data = DeviceData(typed.dataset, torch.device("cpu"), torch.float32, 0, 0)
    generator = torch.Generator().manual_seed(0)
    epochs = [[y for _, y in data.train_batches(16, generator, 2, fixed=True)] for _ in range(2)]
    assert len(epochs[0]) == 2 and all(torch.equal(a, b) for a, b in zip(*epochs))


def test_debug_fast_is_a_few_batches(data_root, tmp_path):
    overrides = [o for o in tiny_overrides(data_root) if not o.startswith(("trainer.epochs", "trainer.progress"))]
    run_config(overrides + ["debug=fast", "trainer.progress=off"], tmp_path)
    assert len(read_metrics(tmp_path)) == 1 and not (tmp_path / "checkpoint.pt").exists()


def test_a_checkpoint_moves_between_devices(data_root, tmp_path, capsys):
    """A checkpoint written on another device type (here: one that says cuda, with a CUDA-sized data
    generator state) resumes: weights and optimizer state carry over, the streams are re-seeded."""
    from dtp_bench.trainer import CHECKPOINT, CHECKPOINT_HASH, file_sha256

    overrides = tiny_overrides(data_root, epochs=2)
    run_config(overrides + ["trainer.epochs=1"], tmp_path)
    path = tmp_path / CHECKPOINT
    state = torch.load(path, weights_only=True)
    weights = {k: v.clone() for k, v in state["algorithm"]["modules"].items()}
    state.update(device_type="cuda", rng_data=torch.zeros(16, dtype=torch.uint8), rng_cuda=[])
    torch.save(state, path)
    (tmp_path / CHECKPOINT_HASH).write_text(file_sha256(path) + "\n")
    capsys.readouterr()
    run_config(overrides + ["resume=true"], tmp_path)
    assert "was written on cuda and this run is on cpu: weights and optimizer state carry over" in capsys.readouterr().err
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    resumed = torch.load(path, weights_only=True)["algorithm"]["modules"]
    assert any(not torch.equal(weights[k], resumed[k]) for k in weights)  # it trained on from there


def test_auto_spreads_sweep_jobs_over_the_gpus(monkeypatch):
    from dtp_bench.trainer import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [str(resolve_device("auto", n)) for n in (0, 1, 5)] == ["cuda:0", "cuda:1", "cuda:1"]
    assert str(resolve_device("auto")) == "cuda"  # a single run: the current device
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert str(resolve_device("auto", 3)) == "cuda"


def test_a_compiled_step_trains_as_the_eager_one(data_root, tmp_path):
    """trainer.compile=default wraps the training step in torch.compile: the same metrics as eager,
    up to float32 reassociation by the compiler (tolerance 1e-3 points of error, 1e-4 of loss)."""
    overrides = tiny_overrides(data_root, epochs=2)
    run_config(overrides, tmp_path / "eager")
    run_config(overrides + ["trainer.compile=default"], tmp_path / "compiled")
    eager, compiled = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    for a, b in zip(eager, compiled):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["test_error"] == pytest.approx(a["test_error"], abs=1e-3)
    assert json.loads((tmp_path / "compiled" / SUMMARY).read_text())["compile"] == "default"
