"""scripts/report.py on a fixture of run directories: exact table rows, missing cells, idempotence."""
from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_report():
    spec = importlib.util.spec_from_file_location("report", REPO / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["report"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


REF_DTP = {"paper": "bartunov2018", "table": "Table 1", "row": "DTP parallel", "column": "MNIST FC",
           "metric": "best_test_error", "value": 2.86, "std": None, "note": "paper train error: 0.44%. x"}
REF_BP = {**REF_DTP, "row": "BP", "value": 1.48, "note": "paper train error: 0.00%."}
REF_FA = {**REF_DTP, "row": "FA", "value": 1.85, "note": ""}
REF_FW = {"paper": "shibuya2023", "table": "Table (test error)", "row": "FW-DTP (0.5M / 6.3M)", "column": "F-MNIST",
          "metric": "test_error", "value": 11.76, "std": 0.37, "note": ""}
REF_IN32 = {"paper": "bartunov2018", "table": "Table 2", "row": "FA", "column": "ImageNet top-1",
            "metric": "best_test_error", "value": 93.08, "std": None, "note": "paper top-5 error: 82.54% (x)."}


def write_run(folder: Path, ref: dict, seed: int, test_errors: list, train_errors: list,
              status: str = "completed", overrides: tuple = (), top5: float | None = None) -> None:
    folder.mkdir(parents=True)
    rows = [{"epoch": i + 1, "train_loss": 0.1, "train_error": tr, "test_error": te, "epoch_seconds": 1.0 + i}
            for i, (te, tr) in enumerate(zip(test_errors, train_errors))]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = [r for r in rows if r["test_error"] is not None]
    summary = {"status": status, "final_test_error": done[-1]["test_error"] if done else None,
               "best_test_error": min(r["test_error"] for r in done) if done else None,
               "final_train_error": rows[-1]["train_error"], "final_val_error": None,
               "epochs_completed": len(done), "seed": seed, "reference": ref, "final_test_top5_error": top5}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(json.dumps({"seed": seed, "reference": ref}))
    (folder / ".hydra" / "overrides.yaml").write_text(
        json.dumps([f"experiment=x/{ref['row']}", f"seed={seed}", *overrides]))


@pytest.fixture
def fixture_dirs(tmp_path):
    runs = tmp_path / "runs"
    sweep = runs / "multirun" / "2026-01-01" / "00-00-00"
    write_run(sweep / "0_seed=1", REF_DTP, 1, [3.0, 2.0, 2.5], [1.0, 0.25, 0.5])
    write_run(sweep / "1_seed=2", REF_DTP, 2, [4.0, 3.0], [2.0, 0.75])
    write_run(sweep / "2_seed=3", REF_DTP, 3, [5.0, None], [3.0, float("nan")], status="diverged")
    write_run(sweep / "3_seed=4", REF_DTP, 4, [4.5], [2.5], status="running")  # in progress: not a failure
    write_run(runs / "outputs" / "bp1", REF_BP, 1, [1.5, 1.25], [0.5, 0.0], top5=0.25)  # no paper top-5
    write_run(runs / "outputs" / "fw1", REF_FW, 0, [11.5, 12.0], [11.0, 10.0])  # best epoch 11.5
    write_run(runs / "outputs" / "fw2", REF_FW, 1, [12.5, 12.5], [11.0, 10.0])
    write_run(runs / "outputs" / "fw_short", REF_FW, 0, [14.0], [12.0], overrides=("trainer.epochs=1",))
    write_run(runs / "outputs" / "in32_1", REF_IN32, 1, [95.0, 94.0], [90.0, 89.0], top5=85.0)
    write_run(runs / "outputs" / "in32_2", REF_IN32, 2, [95.0, 92.0], [90.0, 88.0], top5=83.0)
    # the presets that define the expected cells: FA has no run, so it is listed as missing
    conf = tmp_path / "conf" / "experiment" / "bartunov2018" / "mnist_fc"
    conf.mkdir(parents=True)
    for name, ref in (("dtp_parallel", REF_DTP), ("bp", REF_BP), ("fa", REF_FA)):
        (conf / f"{name}.yaml").write_text("# @package _global_\n" + json.dumps({"reference": ref}) + "\n")
    return runs, tmp_path / "conf"


def test_tables(fixture_dirs, tmp_path):
    runs, conf = fixture_dirs
    out = tmp_path / "out"
    load_report().main(["--runs", str(runs), "--out", str(out), "--conf", str(conf)])
    md = (out / "bartunov2018" / "table_1.md").read_text().splitlines()
    assert "| DTP parallel | MNIST FC |  | best_test_error | 2 | 2.50 ± 0.71 |  | 2.86 | -0.36 | 0.50 / 0.44 | 1 / 0 | ok; 1 unfinished (running, or killed) |" in md
    assert "| BP | MNIST FC |  | best_test_error | 1 | 1.25 |  | 1.48 | -0.23 | 0.00 / 0.00 | 0 / 0 | ok |" in md
    assert "| FA | MNIST FC |  | best_test_error | 0 | — |  | 1.85 |  |  | 0 / 0 | missing (no runs) |" in md
    assert "![table_1__mnist_fc](table_1__mnist_fc.png)" in md
    assert (out / "bartunov2018" / "table_1__mnist_fc.png").stat().st_size > 1000
    with open(out / "bartunov2018" / "table_1.csv") as f:
        rows = {(r["row"], r["variant"]): r for r in csv.DictReader(f)}
    dtp = rows[("DTP parallel", "")]
    assert (dtp["n"], dtp["seeds"], dtp["ours_mean"], dtp["ours_std"], dtp["paper_value"], dtp["difference"],
            dtp["ours_train"], dtp["paper_train"], dtp["diverged"], dtp["failed"], dtp["unfinished"]) == \
        ("2", "1 2", "2.50", "0.71", "2.86", "-0.36", "0.50", "0.44", "1", "0", "1")
    assert rows[("FA", "")]["status"] == "missing (no runs)"
    with open(out / "shibuya2023" / "table_test_error.csv") as f:
        fw = {r["variant"]: r for r in csv.DictReader(f)}
    assert (fw[""]["n"], fw[""]["ours_mean"], fw[""]["ours_std"], fw[""]["paper_std"], fw[""]["difference"]) == \
        ("2", "12.25", "0.35", "0.37", "0.49")
    # the best epoch beside the last: fw1's 11.5 (epoch 1), fw2's 12.5
    assert (fw[""]["ours_best_epoch_mean"], fw[""]["ours_best_epoch_std"]) == ("12.00", "0.71")
    assert "| 12.25 ± 0.35 | 12.00 ± 0.71 | 11.76 ± 0.37 |" in (out / "shibuya2023" / "table_test_error.md").read_text()
    assert fw["trainer.epochs=1"]["ours_mean"] == "14.00"  # a run with other overrides is its own row
    assert "shibuya2023/table_test_error.md" in (out / "index.md").read_text()
    # top-5 error: its own column where the paper printed one, and only there
    md2 = (out / "bartunov2018" / "table_2.md").read_text()
    assert "| FA | ImageNet top-1 |  | best_test_error | 2 | 93.00 ± 1.41 |  | 93.08 | -0.08 | 88.50 / — | 84.00 / 82.54 | 0 / 0 | ok |" in md2
    assert "top-5" not in "\n".join(md)
    with open(out / "bartunov2018" / "table_2.csv") as f:
        (in32,) = csv.DictReader(f)
    assert (in32["ours_top5"], in32["paper_top5"]) == ("84.00", "82.54")


def test_a_seed_run_twice_counts_once(fixture_dirs, tmp_path):
    # the same sweep run again into a new timestamped folder: seed 1 must not count twice
    runs, conf = fixture_dirs
    write_run(runs / "multirun" / "2026-01-02" / "00-00-00" / "0_seed=1", REF_DTP, 1, [1.5, 1.0], [0.5, 0.0])
    out = tmp_path / "out"
    load_report().main(["--runs", str(runs), "--out", str(out), "--conf", str(conf)])
    with open(out / "bartunov2018" / "table_1.csv") as f:
        dtp = next(r for r in csv.DictReader(f) if r["row"] == "DTP parallel")
    assert (dtp["n"], dtp["seeds"], dtp["ours_mean"]) == ("2", "1 2", "2.00")  # seed 1: the later folder's 1.0
    assert "seed 1 ran more than once" in dtp["status"]


def test_the_paper_value_comes_from_the_current_preset(fixture_dirs, tmp_path):
    # a value corrected in the preset after the runs were made (the runs keep the old 2.86)
    runs, conf = fixture_dirs
    corrected = {**REF_DTP, "value": 2.66}
    (conf / "experiment" / "bartunov2018" / "mnist_fc" / "dtp_parallel.yaml").write_text(
        "# @package _global_\n" + json.dumps({"reference": corrected}) + "\n")
    out = tmp_path / "out"
    load_report().main(["--runs", str(runs), "--out", str(out), "--conf", str(conf)])
    with open(out / "bartunov2018" / "table_1.csv") as f:
        dtp = [r for r in csv.DictReader(f) if r["row"] == "DTP parallel"]
    assert [(r["n"], r["paper_value"], r["difference"]) for r in dtp] == [("2", "2.66", "-0.16")]


def test_learning_curve_uses_the_runs_the_table_counts(fixture_dirs):
    # seeds 1 and 2 completed (3 and 2 epochs); seed 3 diverged and seed 4 is still running
    runs, _ = fixture_dirs
    report = load_report()
    (cell,) = [c for c in report.build_cells(report.find_runs([runs]), []).values() if c.ref["row"] == "DTP parallel"]
    assert report.mean_curve(cell) == ([1, 2, 3], [3.5, 2.5, 2.5], 2)


def test_learning_curves_draw_every_row_distinguishably(tmp_path, monkeypatch):
    # twelve rows on one plot: more than matplotlib's ten colours (the FW-DTP F-MNIST column has them)
    report = load_report()
    for i in range(12):
        write_run(tmp_path / f"r{i}", {**REF_FW, "row": f"row {i:02d}"}, 0, [12.0 + i, 11.0 + i], [10.0, 9.0])
    cells = list(report.build_cells(report.find_runs([tmp_path]), []).values())
    figures = []
    monkeypatch.setattr(report, "save", lambda fig, path: figures.append(fig))
    assert report.learning_curves(cells, "t", tmp_path / "curves.png")
    # at most ten legend entries per axes: the twelve rows go to two panels, each distinguishable
    panels = figures[0].axes
    assert [len(ax.get_lines()) for ax in panels] == [10, 2]
    for ax in panels:
        lines = ax.get_lines()
        assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == len(lines)
        assert len(ax.get_legend().get_texts()) == len(lines) <= 10
        assert all(float(t).is_integer() for t in ax.get_xticks())  # epochs: integer ticks


def test_labels_round_long_floats():
    report = load_report()
    assert report.short_label("BP [algorithm.optimizer.lr=0.0007501954443620128]") == \
        "BP [algorithm.optimizer.lr=0.0007502]"
    assert report.short_label("DTP [arch.hidden=[256,256] seed=3 lr=0.5]") == "DTP [arch.hidden=[256,256] seed=3 lr=0.5]"
    assert report.round_value(0.1234567) == "0.1235" and report.round_value([256, 256]) == "[256,256]"


def test_group_by_any_runs(tmp_path):
    """--group-by over runs with no reference: mean ± std per group, curves with seed bands."""
    report = load_report()
    runs = tmp_path / "runs"
    for algo, errors in (("bp", [[8.0, 10.0], [10.0, 12.0]]), ("dtp", [[15.0, 20.0], [17.0, 22.0], [19.0, 24.0]])):
        for seed, test in enumerate(errors):
            folder = runs / f"{algo}_{seed}"
            write_run(folder, {"row": "x"}, seed, test, [5.0, 4.0])
            summary = json.loads((folder / "summary.json").read_text())
            summary.pop("reference")
            summary["choices"] = {"algorithm": algo}
            (folder / "summary.json").write_text(json.dumps(summary))
            (folder / ".hydra" / "config.yaml").write_text(json.dumps(
                {"seed": seed, "algorithm": {"optimizer": {"lr": 0.000750195444 if algo == "bp" else 0.01}}}))
    written = report.group_report([runs], ["algorithm", "algorithm.optimizer.lr"], tmp_path / "out")
    md = (tmp_path / "out" / "by_algorithm_algorithm_optimizer_lr.md").read_text()
    # the last epoch overfits: final and best-epoch errors differ
    assert "| bp | 0.0007502 | 2 | 11.00 ± 1.41 | 9.00 ± 1.41 | 4.00 ± 0.00 | 2 | 0 / 0 |" in md
    assert "| dtp | 0.01 | 3 | 22.00 ± 2.00 | 17.00 ± 2.00 | 4.00 ± 0.00 | 2 | 0 / 0 |" in md
    assert any(p.suffix == ".png" for p in written)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--runs", str(runs), "--group-by",
                          "algorithm", "--out", str(tmp_path / "cli")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli" / "by_algorithm.csv").read_text().splitlines()[1].startswith("bp,2,11.00 ± 1.41")


def test_sensitivity_map_skips_runs_in_progress(tmp_path):
    report = load_report()
    write_run(tmp_path / "r", REF_FW, 0, [12.0], [11.0], status="running",
              overrides=("algorithm.target_step=0.5", "algorithm.optimizer.lr=0.1"))
    cells = list(report.build_cells(report.find_runs([tmp_path]), []).values())
    assert not report.sensitivity_map(cells, "t", tmp_path / "map.png")  # nothing to draw, not a 100 % square


def test_idempotent(fixture_dirs, tmp_path):
    runs, conf = fixture_dirs
    report = load_report()
    outputs = []
    for name in ("a", "b"):
        report.main(["--runs", str(runs), "--out", str(tmp_path / name), "--conf", str(conf)])
        outputs.append({p.relative_to(tmp_path / name): p.read_bytes()
                        for p in sorted((tmp_path / name).rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1]
    assert any(p.suffix == ".png" for p in outputs[0])


def test_variant_ignores_settings_that_do_not_change_the_result(tmp_path):
    report = load_report()
    write_run(tmp_path / "r", REF_FW, 0, [12.0], [11.0],
              overrides=("logger=wandb", "logger.mode=online", "++trainer.epochs=5", "dataset.root=/x"))
    (run,) = report.find_runs([tmp_path])
    assert run.variant == "trainer.epochs=5"


def test_metric_conversions():
    report = load_report()
    run = report.Run(Path("x"), {"final_test_error": 10.0, "best_test_error": 8.0, "status": "completed"},
                     [{"epoch": 1, "epoch_seconds": 9.0}, {"epoch": 2, "epoch_seconds": 2.0},
                      {"epoch": 3, "epoch_seconds": 4.0}], {}, [], 0)
    assert report.metric_value(run, "test_accuracy") == 90.0
    assert report.metric_value(run, "best_test_accuracy") == 92.0
    assert report.metric_value(run, "top5_accuracy") is None  # not recorded by the trainer yet
    assert report.metric_value(run, "epoch_seconds") == 3.0  # median of epochs >= 2


def test_swept_values_become_plot_positions():
    swept_x = load_report()._swept_x
    assert swept_x(["[200]", "[200,200]", "[200,200,200,200]"]) == ([1, 2, 4], "length of")
    assert swept_x(["[20]", "[100]"]) == ([20, 100], "first value of")
    assert swept_x(["0.1", "3"]) == ([0.1, 3], "numeric")
    assert swept_x(["relu", "tanh"]) == (["relu", "tanh"], "categorical")
    # neither the length nor the first size tells these apart: one point each, in order
    assert swept_x(["[200,100]", "[200,50]", "[200,50]"]) == (["[200,100]", "[200,50]", "[200,50]"], "categorical")
    assert swept_x(["[100,100]", "[200]", "[300]"]) == ([100, 200, 300], "first value of")


def test_investigation_sweep_figure(tmp_path):
    ref = {"paper": "investigation2019_fmnist", "table": "5.8 depth", "row": "dtp", "column": "F-MNIST",
           "metric": "best_test_accuracy", "value": None, "std": None, "note": ""}
    runs = tmp_path / "runs"
    for i, (row, hidden) in enumerate([("dtp", "[200]"), ("dtp", "[200,200]"), ("bp", "[200]"), ("bp", "[200,200]")]):
        write_run(runs / f"{i}", {**ref, "row": row}, 0, [20.0 - i], [10.0],
                  overrides=(f"arch.hidden={hidden}", f"experiment/investigation2019/method@_global_={row}"))
    out = tmp_path / "out"
    load_report().main(["--runs", str(runs), "--out", str(out), "--conf", str(tmp_path / "none")])
    md = (out / "investigation2019_fmnist" / "5_8_depth.md").read_text()
    assert "![5_8_depth__sweep](5_8_depth__sweep.png)" in md
    assert (out / "investigation2019_fmnist" / "5_8_depth__sweep.png").stat().st_size > 1000
    # one setting only: nothing is swept, no sweep figure
    single = tmp_path / "single"
    write_run(single / "0", ref, 0, [20.0], [10.0], overrides=("arch.hidden=[200]",))
    load_report().main(["--runs", str(single), "--out", str(tmp_path / "out2"), "--conf", str(tmp_path / "none")])
    assert not (tmp_path / "out2" / "investigation2019_fmnist" / "5_8_depth__sweep.png").exists()


def test_search_table_chooses_on_validation(tmp_path):
    ref = {"paper": "shibuya2023", "table": "search (F-MNIST)", "row": "BP", "column": "F-MNIST",
           "metric": "test_error", "value": 10.42, "std": None, "note": ""}
    sweep = tmp_path / "runs" / "search_bp"
    # trial 1 has the lowest test error but not the lowest validation error: trial 0 is chosen
    for job, (val, test) in enumerate([(11.0, 12.0), (11.5, 10.0)]):
        write_run(sweep / f"{job}_algorithm.optimizer.lr={job}", ref, 0, [test], [5.0],
                  overrides=(f"algorithm.optimizer.lr={job}",))
        summary = json.loads((sweep / f"{job}_algorithm.optimizer.lr={job}" / "summary.json").read_text())
        summary["final_val_error"] = val
        (sweep / f"{job}_algorithm.optimizer.lr={job}" / "summary.json").write_text(json.dumps(summary))
    write_run(sweep / "2_algorithm.optimizer.lr=2", ref, 0, [None], [float("nan")], status="diverged",
              overrides=("algorithm.optimizer.lr=2",))
    # a second search of the same cell at another budget: its own row, never chosen against the first
    longer = tmp_path / "runs" / "search_bp_30ep" / "0_algorithm.optimizer.lr=5"
    write_run(longer, ref, 0, [9.0], [4.0], overrides=("algorithm.optimizer.lr=5", "trainer.epochs=30"))
    summary = json.loads((longer / "summary.json").read_text())
    (longer / "summary.json").write_text(json.dumps({**summary, "final_val_error": 9.5}))
    out = tmp_path / "out"
    load_report().main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--conf", str(tmp_path / "none")])
    md = (out / "shibuya2023" / "search_f_mnist.md").read_text()
    assert "| BP | F-MNIST | search_bp | 3 | 2 | 1 / 0 | #0 | 11.00 | 12.00 | 10.42 | algorithm.optimizer.lr=0 |" in md
    assert ("| BP | F-MNIST | search_bp_30ep | 1 | 1 | 0 / 0 | #0 | 9.50 | 9.00 | 10.42 | "
            "algorithm.optimizer.lr=5 trainer.epochs=30 |") in md


def test_a_run_of_another_method_than_its_cell_now_runs_is_labelled(tmp_path):
    # the FW-DTP table's DTP rows moved from Bartunov's DTP to the authors' code's: older runs say so
    report = load_report()
    ref = {**REF_FW, "row": "DTP (0.5M / 6.3M)", "value": 11.86}
    runs = tmp_path / "runs"
    write_run(runs / "old", ref, 1, [12.0], [10.0])
    write_run(runs / "new", ref, 1, [11.0], [10.0])
    for name, algorithm in (("old", "dtp"), ("new", "dtp_shibuya_code")):
        summary = json.loads((runs / name / "summary.json").read_text())
        (runs / name / "summary.json").write_text(json.dumps({**summary, "choices": {"algorithm": algorithm}}))
    conf = tmp_path / "conf" / "experiment" / "shibuya2023" / "fmnist"
    conf.mkdir(parents=True)
    (conf / "dtp_0.5m.yaml").write_text("# @package _global_\n" + json.dumps(
        {"defaults": [{"override /algorithm": "dtp_shibuya_code"}], "reference": ref}) + "\n")
    cells = report.build_cells(report.find_runs([runs]), report.read_presets(tmp_path / "conf"))
    variants = sorted(c.variant for c in cells.values())
    assert variants == ["", "ran algorithm=dtp, the cell runs dtp_shibuya_code"]
