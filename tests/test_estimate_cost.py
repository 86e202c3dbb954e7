"""scripts/estimate_cost.py: the FLOP count of a BP run equals the matmul count done by hand."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("estimate_cost", REPO / "scripts" / "estimate_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["estimate_cost"] = module
    spec.loader.exec_module(module)
    return module


def test_bp_flops_equal_the_matmuls():
    est = load().estimate(["algorithm=bp", "dataset=fmnist", "arch.hidden=[32,16]", "trainer.batch_size=100",
                           "trainer.eval_batch_size=500", "trainer.epochs=3"])
    first, rest = 784 * 32, 32 * 16 + 16 * 10
    # forward 2·B·Σ(in·out); backward: weight gradients of every layer, input gradients above layer 1
    assert est["flops"]["train_batch"] == 2 * 100 * (first + rest) + 2 * 100 * (first + rest) + 2 * 100 * rest
    assert est["flops"]["eval_batch"] == 2 * 500 * (first + rest)
    assert est["flops"]["feedback_batch"] == 0 and est["batches_per_epoch"] == 600
    epoch = 600 * est["flops"]["train_batch"] + 20 * est["flops"]["eval_batch"]  # 10000 test examples / 500
    assert est["flops"]["epoch"] == epoch and est["flops"]["total"] == 3 * epoch
    assert est["ops"]["train_batch"] > 0


@pytest.mark.parametrize("overrides, expected", [
    (["algorithm=drl"], (6, 1)),            # Meulemans: 6 pre-training epochs, 1 extra before each epoch
    (["algorithm=dtp", "algorithm.schedule=alternating"], (1, 1)),
    (["algorithm=fw_dtp"], (0, 0)),         # fixed feedback: nothing to train
])
def test_feedback_only_epochs(overrides, expected):
    est = load().estimate(overrides + ["arch.hidden=[16,16]", "trainer.epochs=2"])  # 2 layers: DTP has feedback
    assert tuple(est["feedback_only_epochs"].values()) == expected
    first, later = expected
    f = est["flops"]
    assert f["total"] == 2 * f["epoch"] + (first - later) * est["batches_per_epoch"] * f["feedback_batch"]


def test_json_and_summary_table(tmp_path, capsys):
    module = load()
    overrides = ["algorithm=bp", "arch.hidden=[32]", "trainer.batch_size=100", "trainer.epochs=2"]
    assert module.main(overrides + ["--json", "--tflops", "1", "--launch-us", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    (tmp_path / "bp.json").write_text(json.dumps(result))
    # with no launch latency, hours are the FLOPs at 1 TFLOP/s
    assert result["hours"]["1 TFLOP/s"] == pytest.approx(result["flops"]["total"] / 1e12 / 3600)
    table = module.summarize(tmp_path).read_text()
    assert (f"| `{' '.join(overrides)}` | 2 | 600 | {result['flops']['total'] / 1e15:.3g} | "
            f"{result['ops']['total']:.3g} | {result['hours']['1 TFLOP/s']:.2f} |") in table


def test_batch_limits_are_counted_as_the_trainer_applies_them():
    full = load().estimate(["algorithm=bp", "arch.hidden=[16]", "trainer.batch_size=100"])
    capped = load().estimate(["algorithm=bp", "arch.hidden=[16]", "trainer.batch_size=100",
                              "trainer.limit_train_batches=3"])
    assert (full["batches_per_epoch"], capped["batches_per_epoch"]) == (600, 3)
