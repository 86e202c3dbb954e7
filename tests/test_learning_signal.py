"""The learning-signal diagnostic (dtp_bench/learning_signal.py) and the step sizes it exposes."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import run_config, tiny_overrides

from dtp_bench.algorithms.bp import Backprop
from dtp_bench.algorithms.schemas import AlgorithmConfig, TargetPropConfig
from dtp_bench.algorithms.target_prop import TargetPropagation
from dtp_bench.config import DiagnosticsConfig, OptimizerConfig
from dtp_bench.learning_signal import LearningSignal
from dtp_bench.nn.blocks import build_fc
from dtp_bench.nn.schemas import FCArchConfig


def bp(eps: float = 1e-8, widths=(16, 16)) -> Backprop:
    torch.manual_seed(0)
    net = build_fc(FCArchConfig(hidden=list(widths)), (8,), 3)
    return Backprop(AlgorithmConfig(name="bp", optimizer=OptimizerConfig(name="adam", lr=1e-2, eps=eps)), net, 1)


def test_update_ratio_is_the_relative_displacement_of_each_block():
    algo = bp()
    signal = LearningSignal(algo, DiagnosticsConfig(), [])
    signal.begin_epoch()
    start = [torch.cat([p.detach().reshape(-1) for p in b.parameters()]).clone() for b in algo.network.blocks]
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(3):
        algo.train_step(x, y)
    out = signal.end_epoch()
    for i, (block, s) in enumerate(zip(algo.network.blocks, start)):
        now = torch.cat([p.detach().reshape(-1) for p in block.parameters()])
        assert out["update_ratio"][f"block{i}"] == pytest.approx(((now - s).norm() / s.norm()).item(), rel=1e-6)
        assert 0 < out["step_fraction"][f"block{i}"] <= 1


def test_step_fraction_is_adams_share_of_its_nominal_step():
    # a constant gradient c: v̂ = c² exactly, so the fraction is c / (c + ε)
    eps, c = 1e-3, 2e-4
    algo = bp(eps=eps)
    signal = LearningSignal(algo, DiagnosticsConfig(), [])
    optimizer = algo.optimizers["forward"]
    for _ in range(4):
        for p in algo.network.parameters():
            p.grad = torch.full_like(p, c)
        optimizer.step()
    params = list(algo.network.blocks[0].parameters())
    assert signal.step_fraction(params) == pytest.approx(c / (c + eps), rel=1e-5)


def test_frozen_blocks_are_measured_but_never_called_starved():
    algo = bp()
    algo.freeze_blocks([0])
    signal = LearningSignal(algo, DiagnosticsConfig(), [0])
    signal.begin_epoch()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    algo.train_step(x, y)
    row = signal.end_epoch()
    assert row["update_ratio"]["block0"] == 0.0
    assert row["update_ratio"]["block1"] > 1e-3
    assert signal.starved([{"learning_signal": row}]) == {}


def test_a_block_is_starved_only_if_below_threshold_in_every_epoch():
    signal = LearningSignal(bp(), DiagnosticsConfig(starved_update_ratio=1e-3), [])
    low = {"learning_signal": {"update_ratio": {"block0": 1e-5, "block1": 1e-2, "block2": 1e-6}}}
    high = {"learning_signal": {"update_ratio": {"block0": 1e-2, "block1": 1e-2, "block2": 1e-6}}}
    assert list(signal.starved([low, low])) == [0]  # block 2 is the output block: not watched
    assert signal.starved([low, high]) == {}
    assert len(signal.new_warnings([low])) == 1 and signal.new_warnings([low, low]) == []  # once per block


def dtp_first_step(reduction: str) -> list[float]:
    """Mean |ΔW| / lr of each block after one DTP step (Adam, Bartunov's Table 5 MNIST-FC DTP-alt
    optimiser with ε = 1e-4) on a 784-256×5-10 net and MNIST-scaled inputs (mean 0, std 1)."""
    torch.manual_seed(0)
    net = build_fc(FCArchConfig(hidden=[256] * 5), (784,), 10)
    cfg = TargetPropConfig(
        name="dtp", schedule="parallel", first_target="penultimate_gradient", target_step=0.231758,
        target_loss_reduction=reduction, noise=0.220444, local_loss_scale=1.0,
        optimizer=OptimizerConfig(name="adam", lr=0.000308, beta1=0.99, beta2=0.99, eps=1e-4),
        feedback_optimizer=OptimizerConfig(name="adam", lr=0.004593, beta1=0.99, beta2=0.99, eps=1e-4))
    algo = TargetPropagation(cfg, net, 1)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    before = [b.weight_op.weight.detach().clone() for b in net.blocks]
    algo.train_step(x, y)
    return [((b.weight_op.weight.detach() - w).abs().mean() / cfg.optimizer.lr).item()
            for b, w in zip(net.blocks, before)]


def test_summed_first_target_gives_hidden_blocks_their_adam_step():
    # Adam's first step is lr·g/(|g| + ε): about lr per element when |g| ≫ ε. With α a per-example
    # step (sum), every hidden block gets most of it; with the batch-mean loss, α/B leaves gradients
    # ~1e-5 < ε and the hidden blocks a few per cent of it (issue 17), the output block unaffected.
    summed, mean = dtp_first_step("sum"), dtp_first_step("mean")
    assert all(s > 0.6 for s in summed[:-1]), summed
    assert all(m < 0.2 for m in mean[:-1]), mean
    assert summed[-1] == pytest.approx(mean[-1], rel=1e-3)  # the task loss trains the output block


def test_metrics_and_summary_carry_the_learning_signal(data_root, tmp_path, capsys):
    run_config(tiny_overrides(data_root, algorithm="fw_dtp", epochs=2) + ["algorithm.feedback_init_gain=1e-4"], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(set(r["learning_signal"]["update_ratio"]) == {"block0", "block1", "block2"} for r in rows)
    assert "step_fraction" not in rows[0]["learning_signal"]  # plain SGD has no ε
    summary = json.loads((tmp_path / "summary.json").read_text())["learning_signal"]
    # B ~ U(±1e-4): a target difference shrinks ~1e-3-fold per layer, so block 0 never moves
    assert 0 in summary["starved_blocks"] and 2 not in summary["starved_blocks"]
    assert "hidden block 0 looks starved" in capsys.readouterr().err


def test_backprop_is_not_starved(data_root, tmp_path, capsys):
    run_config(tiny_overrides(data_root, algorithm="bp", epochs=2), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())["learning_signal"]
    assert summary["starved_blocks"] == []
    assert all(v > 1e-3 for v in summary["mean_update_ratio"].values())
    assert "starved" not in capsys.readouterr().err


def test_learning_signal_can_be_switched_off(data_root, tmp_path):
    run_config(tiny_overrides(data_root, epochs=1) + ["diagnostics.learning_signal=false"], tmp_path)
    assert "learning_signal" not in json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "learning_signal" not in json.loads((tmp_path / "summary.json").read_text())


# ---------------------------------------------------------------- the early activation check
def test_activation_growth_names_the_first_block_past_the_limit():
    from dtp_bench.learning_signal import activation_growth

    assert activation_growth([0.5, 0.2], [0.9, 1.9], limit=10.0) is None
    assert "hidden block 1" in activation_growth([0.5, 0.1], [0.9, 1.5], limit=10.0)
    assert "hidden block 0" in activation_growth([0.5, 0.1], [float("nan"), 0.1], limit=10.0)


def test_the_run_records_its_early_activation_check(data_root, tmp_path, capsys):
    run_config(tiny_overrides(data_root, algorithm="bp", epochs=2) + ["diagnostics.activation_check_step=2"], tmp_path)
    check = json.loads((tmp_path / "summary.json").read_text())["activation_check"]
    assert check["step"] == 2 and check["warning"] is None
    assert len(check["rms_before"]) == len(check["rms_after"]) == 3  # every block, logits included
    assert "activation RMS" not in capsys.readouterr().err


def test_a_blow_up_is_warned_about_and_the_run_goes_on(data_root, tmp_path, capsys):
    run_config(tiny_overrides(data_root, algorithm="bp", epochs=2)
               + ["diagnostics.activation_check_step=2", "diagnostics.activation_growth_limit=1e-9"], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and "hidden block 0" in summary["activation_check"]["warning"]
    assert "warning: hidden block 0's activation RMS grew" in capsys.readouterr().err
