"""A multirun sweep through the real command line: one job fails, the other still finishes."""
from __future__ import annotations

import json

from conftest import N_TRAIN, tiny_overrides, train_py


def test_sweep_with_a_failing_job(data_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # trainer.val_size follows the seed: seed=1 holds out 1 sample, seed=N_TRAIN holds out every
    # training sample, which the data layer refuses at run time (after Hydra composed the job)
    args = ["-m", f"seed=1,{N_TRAIN}", "trainer.val_size=${seed}", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}",
            *tiny_overrides(data_root, epochs=1)]
    result = train_py(args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]  # a job failed: the sweep says so
    assert "1 completed, 1 failed (2 runs)" in result.stderr
    ok = json.loads((sweep_dir / "0" / "summary.json").read_text())
    failed = json.loads((sweep_dir / "1" / "summary.json").read_text())
    assert ok["status"] == "completed" and ok["seed"] == 1 and ok["final_test_error"] is not None
    assert (sweep_dir / "0" / "metrics.jsonl").read_text().count("\n") == 1
    assert failed["status"] == "failed" and "trainer.val_size" in failed["error"]
    assert "trainer.val_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_optimising_sweep_without_a_validation_split_is_refused(data_root, tmp_path):
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "algorithm.optimizer.lr=interval(1e-4, 1e-2)",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *tiny_overrides(data_root, epochs=1)]
    result = train_py(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "trainer.val_size" in result.stderr and "test set" in result.stderr
    assert not list((tmp_path / "sweep").rglob("metrics.jsonl"))  # nothing trained
    ok = train_py([*args[:-len(tiny_overrides(data_root, epochs=1))], *tiny_overrides(data_root, epochs=1),
                   "trainer.val_size=8", f"hydra.sweep.dir={tmp_path / 'sweep2'}"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "2 completed (2 runs)" in ok.stderr


def test_a_search_resumes_from_its_study_in_the_sweep_dir(data_root, tmp_path):
    """hparams_search=optuna stores the study in the sweep dir: the same command with more trials
    runs only the missing ones, in new folders (the first trials' results stay as they were)."""
    import optuna

    sweep_dir = tmp_path / "search"
    base = ["-m", "hparams_search=optuna", "trainer.val_size=8", f"hydra.sweep.dir={sweep_dir}",
            *tiny_overrides(data_root, epochs=1)]
    first = train_py(base + ["hydra.sweeper.n_trials=2"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    kept = (sweep_dir / "0" / "metrics.jsonl").read_text()

    again = train_py(base + ["hydra.sweeper.n_trials=3"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 of 3 trials finished); running 1 more from trial folder 2" in again.stderr
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert (sweep_dir / "0" / "metrics.jsonl").read_text() == kept
    study = optuna.load_study(study_name="bp_fmnist_fc", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
