"""Tables and figures from run directories, joined to the papers' numbers.

    .venv/bin/python scripts/report.py                         # outputs/ and multirun/ -> reports/
    .venv/bin/python scripts/report.py --runs multirun/2026-01-02 other/ --out my_tables/
    make report                                                # results/runs -> results/ (committed)

Every directory under ``--runs`` holding a ``summary.json`` is a run (its ``metrics.jsonl`` and
``.hydra/config.yaml`` / ``.hydra/overrides.yaml`` are read when present). Runs are grouped by the
preset's ``reference`` node (paper, table, row, column) plus the overrides that are not a seed or
the experiment itself ("variant"); within a group, one value per seed. Written to ``--out``:

- ``<paper>/<table>.md`` and ``.csv`` per paper table: our mean ± std over completed runs (n),
  the paper's value (± std), the difference (ours − paper), diverged / failed runs, runs still
  running (unfinished), and every preset cell of conf/experiment that has no completed run ("missing");
- ``<paper>/<table>__<column>.png``: learning curves (mean over seeds) of every cell;
- search tables (``table`` contains "search"): the trial chosen on validation error, and
  ``<paper>/<table>__<column>__hist.png``, histograms of the best test accuracy per method over
  the configurations (Bartunov et al. Fig. 5 style);
- ``Cost`` tables: a bar chart of the training time per epoch relative to DTP;
- ``Sensitivity`` tables: a heat map of the final test error over (target step, lr);
- ``index.md``: every table and the sweep presets that have no run yet.

Same inputs give byte-identical outputs (sorted inputs, fixed formats, PNGs without timestamps).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REF_KEYS = ("paper", "table", "row", "column")
IGNORED_OVERRIDES = ("experiment", "seed", "trainer.device", "trainer.progress", "dataset.root",
                     "dataset.download", "trainer.checkpoint", "logger", "resume")
TRAIN_NOTE = re.compile(r"paper train error: ([0-9.]+)%")
TOP5_NOTE = re.compile(r"paper top-5 error: ([0-9.]+)%")


# ---------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    path: Path
    summary: dict
    metrics: list[dict]
    reference: dict
    overrides: list[str]
    seed: int | None

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def variant(self) -> str:
        kept = []
        for o in self.overrides:
            key = o.split("=", 1)[0].lstrip("+~")
            if key.split("@")[0].startswith("experiment") and key.endswith("method@_global_"):
                kept.append("method=" + o.split("=", 1)[1])  # the investigation's method group
            elif not (any(key == k or key.startswith(k + ".") for k in IGNORED_OVERRIDES)
                      or key.startswith("hydra") or key.startswith("experiment")):
                kept.append(key + "=" + o.split("=", 1)[1] if "=" in o else o)  # ++k=v is the variant k=v
        return " ".join(sorted(kept))


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.load(path) if path.exists() else None


def _reference(run_dir: Path, summary: dict) -> dict:
    """The run's reference node, resolved (rows such as ${algorithm.name} become the value)."""
    from omegaconf import OmegaConf

    ref = summary.get("reference")
    if ref:
        return dict(ref)
    cfg = _load_yaml(run_dir / ".hydra" / "config.yaml")
    if cfg is None or cfg.get("reference") is None:
        return {}
    try:
        return OmegaConf.to_container(cfg.reference, resolve=True)
    except Exception:  # an interpolation that cannot be resolved outside the run
        return OmegaConf.to_container(cfg.reference, resolve=False)


def read_run(run_dir: Path) -> Run | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    metrics = []
    if (run_dir / "metrics.jsonl").exists():
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:
                pass  # a line cut by a crash
    overrides = _load_yaml(run_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if overrides is not None else []
    seed = summary.get("seed")
    if seed is None:
        cfg = _load_yaml(run_dir / ".hydra" / "config.yaml")
        seed = cfg.get("seed") if cfg is not None else None
    return Run(run_dir, summary, metrics, _reference(run_dir, summary), overrides, seed)


def find_runs(roots: list[Path]) -> list[Run]:
    paths = sorted({p.parent.resolve() for root in roots if root.exists() for p in root.rglob("summary.json")})
    return [r for r in (read_run(p) for p in paths) if r is not None]


# ---------------------------------------------------------------------------- metrics
def _min(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return min(values) if values else None


def metric_value(run: Run, metric: str) -> float | None:
    """Our number for ``metric`` (errors and accuracies in %), None if the run does not have it."""
    s = run.summary
    if metric == "test_error":
        return s.get("final_test_error")
    if metric == "best_test_error":
        return s.get("best_test_error")
    if metric == "train_error":
        return s.get("final_train_error")
    if metric == "best_train_error":
        return _min(run.metrics, "train_error")
    if metric == "test_accuracy":
        return None if s.get("final_test_error") is None else 100.0 - s["final_test_error"]
    if metric == "best_test_accuracy":
        return None if s.get("best_test_error") is None else 100.0 - s["best_test_error"]
    if metric == "top5_accuracy":
        error = s.get("final_test_top5_error")
        return None if error is None else 100.0 - error
    if metric == "epoch_seconds":
        seconds = [r["epoch_seconds"] for r in run.metrics if r.get("epoch_seconds") is not None]
        later = seconds[1:] or seconds  # epoch 1 may hold one-off feedback pre-training
        return statistics.median(later) if later else None
    return s.get(metric)


def train_value(run: Run, metric: str) -> float | None:
    """The training error that goes with ``metric`` (best within the run for best_* metrics)."""
    return _min(run.metrics, "train_error") if metric.startswith("best") else run.summary.get("final_train_error")


def is_accuracy(metric: str) -> bool:
    return "accuracy" in metric


# ---------------------------------------------------------------------------- presets
@dataclass
class Preset:
    name: str
    reference: dict
    sweep: bool
    algorithm: str = ""  # its `override /algorithm:` choice


def _algorithm_choice(defaults) -> str:
    for item in defaults or []:
        if isinstance(item, dict):
            for key, value in item.items():
                if str(key).replace("override ", "").strip() == "/algorithm":
                    return str(value)
    return ""


def read_presets(conf: Path) -> list[Preset]:
    """Every preset under conf/experiment with a reference node (sweeps flagged)."""
    from omegaconf import OmegaConf

    presets = []
    root = conf / "experiment"
    for path in sorted(root.rglob("*.yaml")):
        cfg = OmegaConf.load(path)
        ref = cfg.get("reference")
        if ref is None:
            continue
        ref = OmegaConf.to_container(ref, resolve=False)
        sweep = (bool(OmegaConf.select(cfg, "hydra.sweeper.params"))
                 or any("${" in str(ref.get(k, "")) for k in REF_KEYS))
        defaults = OmegaConf.to_container(cfg.get("defaults"), resolve=False) if cfg.get("defaults") else []
        presets.append(Preset(path.relative_to(root).with_suffix("").as_posix(), ref, sweep,
                              _algorithm_choice(defaults)))
    return presets


# ---------------------------------------------------------------------------- formatting
def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.{digits}f}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


# ---------------------------------------------------------------------------- tables
CSV_HEADER = ["paper", "table", "row", "column", "variant", "metric", "n", "seeds", "ours_mean", "ours_std",
              "ours_best_epoch_mean", "ours_best_epoch_std", "paper_value", "paper_std", "difference", "ours_train",
              "paper_train", "ours_top5", "paper_top5",
              "diverged", "failed", "unfinished", "status"]
MD_HEADER = ["row", "column", "variant", "metric", "n", "ours (mean ± std)", "ours, best epoch", "paper",
             "ours − paper",
             "train: ours / paper", "top-5 error: ours / paper", "diverged / failed", "status"]
TOP5_COLUMN = MD_HEADER.index("top-5 error: ours / paper")
BEST_OF = {"test_error": "best_test_error", "test_accuracy": "best_test_accuracy"}  # last-epoch metric: its best


@dataclass
class Cell:
    ref: dict
    variant: str
    runs: list[Run] = field(default_factory=list)

    def key(self):
        return tuple(str(self.ref.get(k, "")) for k in REF_KEYS) + (self.variant,)

    def completed(self) -> list[Run]:
        """The completed runs, one per seed, ordered by seed. Of several runs with one seed (a sweep
        run twice into new folders, or two copies passed to --runs) the last by path is kept, and
        ``repeated_seeds`` names them, so n and the std never count a seed twice."""
        kept: dict = {}
        for run in sorted((r for r in self.runs if r.status == "completed"), key=lambda r: str(r.path)):
            kept[run.path if run.seed is None else run.seed] = run
        return sorted(kept.values(), key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))

    def repeated_seeds(self) -> list:
        seeds = [r.seed for r in self.runs if r.status == "completed" and r.seed is not None]
        return sorted({s for s in seeds if seeds.count(s) > 1})


def outcome_counts(runs: list[Run]) -> tuple[int, int, int]:
    """(diverged, failed, unfinished) runs. ``running`` is what a summary says until the run ends, so
    it is a run in progress (or one killed without a chance to write ``failed``), not a failure."""
    diverged = sum(r.status == "diverged" for r in runs)
    failed = sum(r.status not in ("completed", "diverged", "running") for r in runs)
    unfinished = sum(r.status == "running" for r in runs)
    return diverged, failed, unfinished


def cell_rows(cell: Cell) -> tuple[list[str], list[str]]:
    ref, metric = cell.ref, cell.ref.get("metric", "test_error")
    done = cell.completed()
    values = [v for v in (metric_value(r, metric) for r in done) if v is not None]
    trains = [v for v in (train_value(r, metric) for r in done) if v is not None]
    mean, std = mean_std(values)
    # the same runs at their best epoch, beside the last (a last-epoch number hides overfitting; a
    # best-epoch one is chosen on the test set, so it is not the cell's number)
    best_metric = BEST_OF.get(metric)
    best_mean, best_std = mean_std([v for v in (metric_value(r, best_metric) for r in done) if v is not None]
                                   if best_metric else [])
    train_mean, _ = mean_std(trains)
    top5_mean, _ = mean_std([r.summary["final_test_top5_error"] for r in done
                             if r.summary.get("final_test_top5_error") is not None])
    diverged, failed, unfinished = outcome_counts(cell.runs)
    paper, paper_std = ref.get("value"), ref.get("std")
    match = TRAIN_NOTE.search(str(ref.get("note", "")))
    paper_train = float(match.group(1)) if match else None
    match = TOP5_NOTE.search(str(ref.get("note", "")))
    paper_top5 = float(match.group(1)) if match else None
    diff = None if mean is None or paper is None else mean - paper
    if not cell.runs:
        status = "missing (no runs)"
    elif done and not values:
        status = f"metric {metric} not recorded"
    elif not values:
        status = "missing (no completed run)"
    else:
        status = "ok"
    if unfinished:
        status += f"; {unfinished} unfinished (running, or killed)"
    repeated = cell.repeated_seeds()
    if repeated:
        status += f"; seed {', '.join(map(str, repeated))} ran more than once (the last folder by path is used)"
    seeds = " ".join(str(r.seed) for r in done if metric_value(r, metric) is not None)  # the n counted
    digits = 3 if metric == "epoch_seconds" else 2
    csv_row = [str(ref.get("paper", "")), str(ref.get("table", "")), str(ref.get("row", "")),
               str(ref.get("column", "")), cell.variant, metric, str(len(values)), seeds, fmt(mean, digits),
               fmt(std, digits), fmt(best_mean), fmt(best_std), fmt(paper), fmt(paper_std), fmt(diff), fmt(train_mean),
               fmt(paper_train),
               fmt(top5_mean), fmt(paper_top5), str(diverged), str(failed), str(unfinished), status]
    ours = "—" if mean is None else fmt(mean, digits) + ("" if std is None else f" ± {fmt(std, digits)}")
    best_text = "" if best_mean is None else fmt(best_mean) + ("" if best_std is None else f" ± {fmt(best_std)}")
    paper_text = "—" if paper is None else fmt(paper) + ("" if paper_std is None else f" ± {fmt(paper_std)}")
    train_text, top5_text = (
        "" if a is None and b is None else f"{fmt(a) or '—'} / {fmt(b) or '—'}"
        for a, b in ((train_mean, paper_train), (top5_mean, paper_top5)))
    md_row = [str(ref.get("row", "")), str(ref.get("column", "")), cell.variant, metric, str(len(values)), ours,
              best_text, paper_text, "" if diff is None else f"{diff:+.2f}", train_text, top5_text,
              f"{diverged} / {failed}",
              status]
    return csv_row, md_row


def _without(items: list[str], index: int) -> list[str]:
    return items[:index] + items[index + 1:]


def build_cells(runs: list[Run], presets: list[Preset]) -> dict[tuple, Cell]:
    # the paper's numbers come from today's preset when one names the cell: a value corrected after
    # the runs were made must not stay wrong in the table (each run keeps its own copy)
    current = {Cell(p.reference, "").key()[:-1]: p for p in presets}
    cells: dict[tuple, Cell] = {}
    for run in runs:
        if not run.reference.get("paper"):
            continue
        ref_key = Cell(run.reference, "").key()[:-1]
        preset = current.get(ref_key)
        variant = run.variant
        ran = str(run.summary.get("choices", {}).get("algorithm", ""))
        if preset is not None and preset.algorithm and ran and ran != preset.algorithm:
            # a run made before its cell changed method is not that cell's result: say what it ran
            variant = " ".join(filter(None, [f"ran algorithm={ran}, the cell runs {preset.algorithm}", variant]))
        cell = Cell(preset.reference if preset is not None else run.reference, variant)
        cells.setdefault(cell.key(), cell).runs.append(run)
    for preset in presets:  # preset cells nobody ran are listed as missing
        if preset.sweep:
            continue
        cell = Cell(preset.reference, "")
        cells.setdefault(cell.key(), cell)
    return cells


def search_rows(cells: list[Cell]) -> tuple[list[str], list[list[str]]]:
    """Per searched (row, column) and sweep folder: trials, the trial with the lowest final validation
    error, its test error. Two searches of one cell (another budget, a rerun) stay two rows: a
    trial is only ever chosen against the trials of its own search."""
    groups: dict[tuple, list[Run]] = {}
    refs: dict[tuple, dict] = {}
    for cell in cells:
        cell_key = (str(cell.ref.get("row", "")), str(cell.ref.get("column", "")))
        refs[cell_key] = cell.ref
        for run in cell.runs:
            groups.setdefault(cell_key + (str(run.path.parent),), []).append(run)
    for cell_key in set(refs) - {key[:2] for key in groups}:
        groups[cell_key + ("",)] = []  # a search preset nobody ran
    header = ["row", "column", "sweep", "trials", "completed", "diverged / failed", "chosen on validation (#job)",
              "val error", "its final test error", "paper", "chosen overrides"]
    rows = []
    for key in sorted(groups):
        trials = groups[key]
        done = [r for r in trials if r.status == "completed" and r.summary.get("final_val_error") is not None]
        chosen = min(done, key=lambda r: (r.summary["final_val_error"], str(r.path))) if done else None
        diverged, failed, _ = outcome_counts(trials)
        rows.append([key[0], key[1], Path(key[2]).name if key[2] else "—", str(len(trials)), str(len(done)),
                     f"{diverged} / {failed}", f"#{chosen.path.name.split('_', 1)[0]}" if chosen else "—",
                     fmt(chosen.summary["final_val_error"]) if chosen else "",
                     fmt(chosen.summary.get("final_test_error")) if chosen else "",
                     fmt(refs[key[:2]].get("value")), chosen.variant if chosen else ""])
    return header, rows


# ---------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "dtp_bench", "figure.max_open_warning": 0})
    return plt


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=90, metadata={"Software": None}, bbox_inches="tight")
    _pyplot().close(fig)


def line_style(index: int) -> str:
    """Matplotlib's colour cycle has ten colours: lines after the tenth repeat a colour, so they
    change the dash pattern instead (two rows drawn identically cannot be told apart)."""
    return ("-", "--", ":", "-.")[(index // 10) % 4]


def mean_curve(cell: Cell) -> tuple[list[int], list[float], int]:
    """(epochs, mean test error, n) over the runs the table counts: an unfinished or diverged run
    would cut or bend the curve. Each epoch is the mean over the runs that reached it."""
    by_epoch: dict[int, list[float]] = {}
    for run in cell.completed():
        for row in run.metrics:
            if row.get("test_error") is not None:
                by_epoch.setdefault(row["epoch"], []).append(row["test_error"])
    epochs = sorted(by_epoch)
    n = max((len(v) for v in by_epoch.values()), default=0)
    return epochs, [statistics.fmean(by_epoch[e]) for e in epochs], n


NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:e-?\d+)?")


def short_label(text: str) -> str:
    """A legend label with long floats rounded (0.000750195444 → 0.0007502)."""
    return NUMBER.sub(lambda m: f"{float(m.group()):.4g}", text)


def learning_curves(cells: list[Cell], title: str, path: Path) -> bool:
    """Mean test-error curve per cell with a ±1 std band over its seeds (band_panels)."""
    metric = cells[0].ref.get("metric", "test_error")
    accuracy = is_accuracy(metric)
    curves = []
    for cell in sorted(cells, key=lambda c: c.key()):
        epochs, mean, std = band_curve(cell.completed())
        if not epochs:
            continue
        if accuracy:
            mean = [100.0 - m for m in mean]
        n = len(cell.completed())
        label = short_label(str(cell.ref.get("row", "")) + (f" [{cell.variant}]" if cell.variant else "")) + f" (n={n})"
        curves.append((label, epochs, mean, std, n))
    if not curves:
        return False
    band_panels(curves, "test accuracy (%)" if accuracy else "test error (%)",
                title + " (mean ± std over seeds)", path, legend_size=6)
    return True


def band_panels(curves: list[tuple], ylabel: str, title: str, path: Path, legend_size: int = 7) -> None:
    """Curves (label, epochs, mean, std, n) with a ±1 std band where n > 1, at most MAX_LEGEND per
    panel (further panels below), legends beside the curves, integer epoch ticks."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    panels = [curves[i:i + MAX_LEGEND] for i in range(0, len(curves), MAX_LEGEND)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 4.5 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        for index, (label, epochs, mean, std, n) in enumerate(panel):
            line, = ax.plot(epochs, mean, label=label, marker="." if len(epochs) < 30 else None,
                            linestyle=line_style(index))
            if n > 1:
                ax.fill_between(epochs, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over
    axes[0, 0].set_title(title, fontsize=9)
    save(fig, path)


def histograms(cells: list[Cell], title: str, path: Path) -> bool:
    """Per row, the distribution over a search's configurations of the error the search chose on:
    the final validation error (the test error only for runs without a validation split)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    by_row: dict[str, list[float]] = {}
    on_val = all(r.summary.get("final_val_error") is not None for c in cells for r in c.completed())
    key = "final_val_error" if on_val else "best_test_error"
    for cell in cells:
        for run in cell.completed():
            if run.summary.get(key) is not None:
                by_row.setdefault(str(cell.ref.get("row", "")), []).append(run.summary[key])
    if not by_row:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lo = min(min(v) for v in by_row.values())
    hi = max(max(v) for v in by_row.values())
    bins = [lo + (hi - lo + 1e-9) * i / 20 for i in range(21)]
    for row in sorted(by_row)[:MAX_LEGEND]:
        ax.hist(by_row[row], bins=bins, alpha=0.5, label=f"{row} (n={len(by_row[row])})")
    ax.set_xlabel("final validation error (%) of a configuration" if on_val
                  else "best test error (%) of a configuration (no validation split)")
    ax.set_ylabel("configurations")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    save(fig, path)
    return True


def cost_chart(cells: list[Cell], title: str, path: Path) -> bool:
    seconds = {}
    for cell in cells:
        values = [v for v in (metric_value(r, "epoch_seconds") for r in cell.completed()) if v]
        if values:
            seconds[str(cell.ref.get("row", ""))] = statistics.fmean(values)
    if not seconds:
        return False
    base = seconds.get("dtp")
    rows = sorted(seconds)
    values = [seconds[r] / base if base else seconds[r] for r in rows]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(rows, values)
    ax.set_ylabel("time per epoch relative to DTP" if base else "seconds per epoch (no DTP run)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", rotation=45)
    save(fig, path)
    return True


def _override_value(run: Run, key: str) -> str | None:
    for o in run.overrides:
        if o.split("=", 1)[0] == key:
            return o.split("=", 1)[1]
    return None


def sensitivity_map(cells: list[Cell], title: str, path: Path) -> bool:
    grid: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        for run in cell.runs:
            beta, lr = _override_value(run, "algorithm.target_step"), _override_value(run, "algorithm.optimizer.lr")
            if beta is None or lr is None:
                continue
            if run.status == "running":  # in progress: neither a result nor a failure
                continue
            error = run.summary.get("final_test_error") if run.status == "completed" else 100.0
            grid.setdefault((beta, lr), []).append(100.0 if error is None else error)
    if not grid:
        return False
    betas = sorted({b for b, _ in grid}, key=float)
    lrs = sorted({lr for _, lr in grid}, key=float)
    data = [[statistics.fmean(grid[(b, lr)]) if (b, lr) in grid else float("nan") for lr in lrs] for b in betas]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    image = ax.imshow(data, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(lrs)), lrs)
    ax.set_yticks(range(len(betas)), betas)
    ax.set_xlabel("forward lr")
    ax.set_ylabel("target step β")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(image, label="final test error (%) (failed/diverged = 100)")
    ax.set_title(title, fontsize=9)
    save(fig, path)
    return True


def _swept_x(values: list[str]) -> tuple[list, str]:
    """Plot positions for the swept values: numbers as numbers; for lists of layer sizes the length
    (depth) if it tells them apart, else the first size (width) if that does; anything else (and
    lists neither tells apart) in the given order."""
    import ast

    try:
        parsed = [ast.literal_eval(v) for v in values]
    except (ValueError, SyntaxError):
        return list(values), "categorical"
    if all(isinstance(p, (int, float)) for p in parsed):
        return parsed, "numeric"
    if all(isinstance(p, list) and p for p in parsed):
        distinct = len({tuple(p) for p in parsed})
        # only a summary that tells every swept list apart; else two settings would share a point
        for summary, label in ((len, "length of"), (lambda p: p[0], "first value of")):
            positions = [summary(p) for p in parsed]
            if len(set(positions)) == distinct and (distinct > 1 or label == "first value of"):
                return positions, label
    return list(values), "categorical"


def sweep_plot(cells: list[Cell], title: str, path: Path) -> bool:
    """Final metric against the swept value, one line per row (method) and other swept values."""
    metric = cells[0].ref.get("metric", "test_error")
    runs = [(str(c.ref.get("row", "")), r, dict(o.split("=", 1) for o in r.variant.split() if "=" in o))
            for c in cells for r in c.completed()]
    settings = [setting for _, _, setting in runs]
    keys = sorted({k for s in settings for k in s if k != "method"})
    varying = [k for k in keys if len({s.get(k) for s in settings}) > 1]
    if not varying:
        return False
    x_key = max(varying, key=lambda k: (len({s.get(k) for s in settings}), k))
    raw = sorted({s.get(x_key) for s in settings if s.get(x_key) is not None}, key=str)
    positions, kind = _swept_x(raw)
    if kind == "categorical":
        positions = list(range(len(raw)))
    where = dict(zip(raw, positions))
    lines: dict[str, dict] = {}
    for row, run, setting in runs:
        value = metric_value(run, metric)
        if value is None or setting.get(x_key) is None:
            continue
        label = short_label(" ".join([row] + [f"{k}={setting[k]}" for k in varying if k != x_key and k in setting]))
        lines.setdefault(label, {}).setdefault(where[setting[x_key]], []).append(value)
    if not lines:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for index, label in enumerate(sorted(lines)):
        xs = sorted(lines[label])
        ax.plot(xs, [statistics.fmean(lines[label][x]) for x in xs], marker="o", label=label,
                linestyle=line_style(index))
    if kind == "categorical":
        ax.set_xticks(positions, raw)
    elif kind == "numeric" and min(positions) > 0 and max(positions) / min(positions) >= 100:
        ax.set_xscale("log")
    ax.set_xlabel(x_key if kind in ("numeric", "categorical") else f"{kind} {x_key}")
    ax.set_ylabel(metric.replace("_", " ") + " (%), mean over seeds")
    handles, labels = ax.get_legend_handles_labels()
    extra = len(handles) - MAX_LEGEND
    ax.legend(handles[:MAX_LEGEND], labels[:MAX_LEGEND], fontsize=7,
              title=f"(+{extra} more lines, not labelled)" if extra > 0 else None, title_fontsize=6)
    ax.set_title(title, fontsize=9)
    save(fig, path)
    return True


# ---------------------------------------------------------------------------- main
# ---------------------------------------------------------------------------- --group-by
MAX_LEGEND = 10  # entries per axes: more go to further panels


def round_value(value: Any) -> str:
    """A config value for a label: floats to 4 significant digits, lists compact."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(round_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


def config_value(run: Run, key: str) -> Any:
    """``key`` for a run: a config group's choice (algorithm, arch, dataset, experiment, ...) from
    summary.json, else the dotted key in the run's resolved .hydra/config.yaml ('?' if neither)."""
    from omegaconf import OmegaConf

    choices = run.summary.get("choices") or {}
    if key in choices:
        return choices[key]
    if key == "seed":
        return run.seed
    cfg = _load_yaml(run.path / ".hydra" / "config.yaml")
    if cfg is not None:
        try:
            value = OmegaConf.select(cfg, key, default="?", throw_on_resolution_failure=False)
        except Exception:
            value = "?"
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return "?"


def group_runs(runs: list[Run], keys: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(round_value(config_value(run, k)) for k in keys), []).append(run)
    return dict(sorted(groups.items()))


GROUP_METRICS = (("final test error", "final_test_error"), ("best-epoch test error", "best_test_error"),
                 ("final val error", "final_val_error"), ("final train error", "final_train_error"))


def group_rows(groups: dict[tuple, list[Run]]) -> tuple[list[str], list[list[str]]]:
    """One row per group: n completed, mean ± std of each metric over them, diverged / failed."""
    shown = [(label, key) for label, key in GROUP_METRICS
             if any(r.summary.get(key) is not None for runs in groups.values() for r in runs)]
    rows = []
    for values, runs in groups.items():
        done = [r for r in runs if r.status == "completed"]
        row = [*values, str(len(done))]
        for _, key in shown:
            mean, std = mean_std([r.summary[key] for r in done if r.summary.get(key) is not None])
            row.append("" if mean is None else fmt(mean) + ("" if std is None else f" ± {fmt(std)}"))
        epochs = sorted({r.summary.get("epochs_completed") for r in done} - {None})
        row.append(",".join(map(str, epochs)))
        row.append(f"{sum(r.status == 'diverged' for r in runs)} / "
                   f"{sum(r.status not in ('completed', 'diverged') for r in runs)}")
        rows.append(row)
    return [label for label, _ in shown], rows


def band_curve(runs: list[Run], metric: str = "test_error") -> tuple[list[int], list[float], list[float]]:
    """(epochs, mean, std) of ``metric`` over the runs that reached each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.metrics:
            if row.get(metric) is not None:
                by_epoch.setdefault(row["epoch"], []).append(row[metric])
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def group_curves(groups: dict[tuple, list[Run]], keys: list[str], path: Path, metric: str = "test_error") -> bool:
    """Mean curves with a ±1 std band over seeds, one per group (band_panels)."""
    curves = []
    for values, runs in groups.items():
        done = [r for r in runs if r.status == "completed"]
        epochs, mean, std = band_curve(done, metric)
        if epochs:
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, values)) + f" (n={len(done)})"
            curves.append((label, epochs, mean, std, len(done)))
    if not curves:
        return False
    name = metric.replace("_", " ")
    band_panels(curves, name + " (%)", f"{name} by {', '.join(keys)}: mean ± std over seeds", path)
    return True


def group_report(run_roots: list[Path], keys: list[str], out: Path) -> list[Path]:
    """Tables (markdown, CSV) and learning curves of any runs, grouped by config keys."""
    runs = find_runs(run_roots)
    groups = group_runs(runs, keys)
    metric_labels, rows = group_rows(groups)
    header = [*keys, "n", *[f"{m} (mean ± std)" for m in metric_labels], "epochs", "diverged / failed"]
    out.mkdir(parents=True, exist_ok=True)
    base = out / ("by_" + slug("_".join(keys)))
    write_csv(base.with_suffix(".csv"), header, rows)
    lines = [f"# Runs grouped by {', '.join(keys)}", "",
             f"{len(runs)} run directories read from {', '.join(map(str, run_roots))}; mean ± std over the "
             f"completed runs of each group (n); errors in %.", "", md_table(header, rows)]
    written = [base.with_suffix(".csv")]
    png = base.with_suffix(".png")
    if group_curves(groups, keys, png):
        lines += ["", f"![{png.stem}]({png.name})"]
        written.append(png)
    if any(r.metrics and any("val_error" in m for m in r.metrics) for r in runs):
        val_png = out / (base.name + "__val.png")
        if group_curves(groups, keys, val_png, "val_error"):
            lines += ["", f"![{val_png.stem}]({val_png.name})"]
            written.append(val_png)
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return [base.with_suffix(".md"), *written]


def report(run_roots: list[Path], out: Path, conf: Path = ROOT / "conf") -> list[Path]:
    runs = find_runs(run_roots)
    presets = read_presets(conf) if (conf / "experiment").exists() else []
    cells = build_cells(runs, presets)
    tables: dict[tuple[str, str], list[Cell]] = {}
    for key in sorted(cells):
        cell = cells[key]
        tables.setdefault((str(cell.ref.get("paper", "")), str(cell.ref.get("table", ""))), []).append(cell)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index = ["# Results", "", f"{len(runs)} run directories read; "
             f"{sum(1 for r in runs if not r.reference.get('paper'))} without a reference (not tabled here; "
             f"`scripts/report.py --runs ... --group-by KEYS` tables any runs).", ""]
    ran_tables = {k for k, cs in tables.items() if any(c.runs for c in cs)}
    for (paper, table), table_cells in sorted(tables.items()):
        folder = out / slug(paper)
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / slug(table)
        lines = [f"# {paper} — {table}", ""]
        if "search" in table.lower():
            header, rows = search_rows(table_cells)
        else:
            csv_rows, md_rows = [], []
            for cell in sorted(table_cells, key=lambda c: c.key()):
                c_row, m_row = cell_rows(cell)
                csv_rows.append(c_row)
                md_rows.append(m_row)
            write_csv(base.with_suffix(".csv"), CSV_HEADER, csv_rows)
            written.append(base.with_suffix(".csv"))
            header, rows = MD_HEADER, md_rows
            if not any(TOP5_NOTE.search(str(c.ref.get("note", ""))) for c in table_cells):  # where the paper has it
                header, rows = _without(header, TOP5_COLUMN), [_without(row, TOP5_COLUMN) for row in rows]
        if "search" in table.lower():
            write_csv(base.with_suffix(".csv"), header, rows)
            written.append(base.with_suffix(".csv"))
        lines.append(md_table(header, rows))
        figures = []
        columns = sorted({str(c.ref.get("column", "")) for c in table_cells if c.runs})
        for column in columns:
            in_column = [c for c in table_cells if str(c.ref.get("column", "")) == column and c.runs]
            png = folder / f"{slug(table)}__{slug(column)}.png"
            if learning_curves(in_column, f"{paper} — {table} — {column}", png):
                figures.append(png)
            if "search" in table.lower():
                png = folder / f"{slug(table)}__{slug(column)}__hist.png"
                if histograms(in_column, f"{paper} — {table} — {column}: the searched configurations", png):
                    figures.append(png)
        if table.lower().startswith("cost"):
            png = folder / f"{slug(table)}__bars.png"
            if cost_chart(table_cells, f"{paper} — {table}", png):
                figures.append(png)
        if paper.startswith("investigation"):
            png = folder / f"{slug(table)}__sweep.png"
            if sweep_plot([c for c in table_cells if c.runs], f"{paper} — {table}", png):
                figures.append(png)
        if table.lower().startswith("sensitivity"):
            for row in sorted({str(c.ref.get("row", "")) for c in table_cells if c.runs}):
                png = folder / f"{slug(table)}__{slug(row)}__grid.png"
                if sensitivity_map([c for c in table_cells if str(c.ref.get("row", "")) == row],
                                   f"{paper} — {table} — {row}", png):
                    figures.append(png)
        lines += [f"![{p.stem}]({p.name})" for p in figures]
        base.with_suffix(".md").write_text("\n".join(lines).rstrip() + "\n")
        written += [base.with_suffix(".md"), *figures]
        index.append(f"- [{paper} — {table}]({slug(paper)}/{slug(table)}.md)"
                     + ("" if (paper, table) in ran_tables else " (no runs yet)"))
    unrun = sorted(p.name for p in presets if p.sweep and (str(p.reference.get("paper")), str(p.reference.get("table")))
                   not in ran_tables)
    if unrun:
        index += ["", "## Sweep presets without runs", ""] + [f"- `{name}`" for name in unrun]
    (out / "index.md").write_text("\n".join(index) + "\n")
    written.append(out / "index.md")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, default=[ROOT / "outputs", ROOT / "multirun"],
                        help="run or multirun directories, searched recursively (default: outputs/ multirun/)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports",
                        help="output folder (default: reports/; results/ holds the committed tables: `make report`)")
    parser.add_argument("--conf", type=Path, default=ROOT / "conf",
                        help="config folder whose experiment/ presets define the expected cells")
    parser.add_argument("--group-by", nargs="+", metavar="KEY", default=None,
                        help="instead of the papers' tables: any runs grouped by config keys, e.g. "
                             "--group-by algorithm algorithm.optimizer.lr (a group's choice or a dotted key)")
    args = parser.parse_args(argv)
    if args.group_by:
        written = group_report(args.runs, args.group_by, args.out)
    else:
        written = report(args.runs, args.out, args.conf)
    print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
