"""One check on real data: BP, FC net, one epoch of Fashion-MNIST reaches < 20 % test error.

Skips when Fashion-MNIST is not on this machine, except under CI=true, where it must be (the
Makefile's `data` step installs it), so a broken data setup fails CI instead of hiding.
"""
from __future__ import annotations

import json
import os

import pytest
from conftest import run_config

from dtp_bench.data import _read, default_root

pytestmark = pytest.mark.realdata


def test_bp_fc_one_epoch_fashion_mnist(tmp_path):
    if _read("fmnist", default_root()) is None:
        message = (f"Fashion-MNIST not found under {default_root()} or /usr/share/datasets/fashion-mnist "
                   f"(make data, or set $DTP_BENCH_DATA)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    run_config(["algorithm=bp", "arch=fc", "dataset=fmnist", "dataset.download=false",
                "trainer.epochs=1", "trainer.device=cpu", "trainer.progress=off"], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final_test_error"] < 20.0, summary["final_test_error"]
