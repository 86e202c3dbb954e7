"""Checkpoint policy (last for single runs, dropped by finished sweep jobs, optional best) and
scripts/evaluate.py, which rebuilds a run from its stored configuration."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, read_metrics, run_config, tiny_overrides, train_py

from dtp_bench.config import ConfigError
from dtp_bench.evaluate import evaluate_checkpoint


def test_last_and_best_checkpoints_evaluate_to_the_recorded_errors(data_root, tmp_path):
    run_dir = tmp_path / "run"
    run_config(tiny_overrides(data_root, epochs=3) + ["trainer.val_size=8", "trainer.save_best=true",
                                                     "algorithm.optimizer.lr=0.05"], run_dir)
    rows = read_metrics(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    best_row = min(rows, key=lambda r: r["val_error"])  # the first of equal ones
    assert summary["best_checkpoint"] == {"file": "best.pt", "epoch": best_row["epoch"], "metric": "val_error",
                                          "value": best_row["val_error"]}

    last = evaluate_checkpoint(run_dir, "last", "test", data_root=str(data_root))
    assert last["epoch"] == 3 and last["error"] == pytest.approx(rows[-1]["test_error"], abs=1e-9)
    best = evaluate_checkpoint(run_dir, "best", "val", data_root=str(data_root))
    assert best["epoch"] == best_row["epoch"] and best["error"] == pytest.approx(best_row["val_error"], abs=1e-9)
    best_test = evaluate_checkpoint(run_dir, "best", "test", data_root=str(data_root))
    assert best_test["error"] == pytest.approx(best_row["test_error"], abs=1e-9)

    # the command line: one line, or JSON
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), str(run_dir), "--json",
                          "--data-root", str(data_root)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["error"] == pytest.approx(rows[-1]["test_error"], abs=1e-9)


def test_evaluate_says_what_is_missing(data_root, tmp_path):
    run_config(tiny_overrides(data_root, epochs=1), tmp_path)
    with pytest.raises(ConfigError, match="no best.pt .* trainer.save_best=true"):
        evaluate_checkpoint(tmp_path, "best")
    with pytest.raises(ConfigError, match="no validation split"):
        evaluate_checkpoint(tmp_path, "last", "val", data_root=str(data_root))
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "is corrupt" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("keep", [None, True])
def test_finished_sweep_jobs_drop_their_checkpoint_unless_asked(data_root, tmp_path, keep):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "seed=1,2", f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}",
            *tiny_overrides(data_root, epochs=1)]
    if keep:
        args.append("trainer.keep_checkpoint=true")
    result = train_py(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "summary.json").read_text())["status"] == "completed"
        assert (sweep_dir / job / "checkpoint.pt").exists() == bool(keep)
    again = train_py(args + ["resume=true"], cwd=tmp_path)  # finished jobs are recognised either way
    assert again.returncode == 0 and again.stdout.count("nothing to train") == (0 if keep else 2)


def test_a_single_run_keeps_its_checkpoint_unless_told(data_root, tmp_path):
    run_config(tiny_overrides(data_root, epochs=1), tmp_path / "kept")
    assert (tmp_path / "kept" / "checkpoint.pt").exists()
    run_config(tiny_overrides(data_root, epochs=1) + ["trainer.keep_checkpoint=false"], tmp_path / "dropped")
    assert not (tmp_path / "dropped" / "checkpoint.pt").exists()
