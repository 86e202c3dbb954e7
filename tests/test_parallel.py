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


def _overrides(root, algorithm, extra, epochs=2):
    return tiny_overrides(root, epochs=epochs, algorithm=algorithm) + ["trainer.precision=fp64", *extra]


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


@pytest.mark.parametrize("case", list(CASES))
def test_batched_runs_equal_the_runs_one_by_one(data_root, tmp_path, case):
    algorithm, extra = CASES[case]
    overrides = _overrides(data_root, algorithm, extra)
    run_config(overrides + [f"seed={SEED}", f"trainer.parallel_runs={RUNS}"], tmp_path / "batched")
    for k, folder in enumerate(run_folders(tmp_path / "batched", SEED, RUNS)):
        run_config(overrides + [f"seed={SEED + k}"], tmp_path / f"single{k}")
        assert_same_run(folder, tmp_path / f"single{k}")
        summary = json.loads((folder / SUMMARY).read_text())
        assert summary["status"] == "completed" and summary["seed"] == SEED + k
        assert summary["parallel"]["runs"] == RUNS
