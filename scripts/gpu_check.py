"""The prepared GPU check (`make gpu-check`, scripts/gpu_check.sh): on a CUDA machine, in a few
minutes, every algorithm × arch trains a few batches through the real runner (data on the device,
AMP, the Trainer) on Fashion-MNIST-shaped (28×28×1) and CIFAR-shaped (32×32×3) synthetic data in
the official file formats, in fp32 and bf16, and a BP and an FW-DTP epoch on 60000 F-MNIST-shaped
images is timed (CUDA-synchronised), eager and under torch.compile (`trainer.compile`; on CUDA also
reduce-overhead, which captures the compiled step in CUDA graphs) and as 16 batched runs
(`trainer.parallel_runs=16`, reported in runs·epochs per second). Every algorithm also trains a few
batches as 4 batched runs on each arch. Writes
results/bench/gpu.json.

Without CUDA it says so, runs the CPU part (every algorithm × arch in fp32, the epochs timed on
CPU; about 12 minutes on 2 cores) and exits 0, writing results/bench/gpu_check_cpu.json. A
combination the config refuses (a net that does not fit 28×28 inputs) is recorded as refused with
its message, not as a failure; a crash or a non-finite loss is a failure (exit 1 if any)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # conftest's writers of official-format files

ALGORITHMS = ["bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fw_dtp", "drl", "scaling_dtp", "l_drl"]
ARCHS = ["fc", "lc", "conv", "lenet", "vgg"]
BATCHED_ARCHS = ARCHS
BATCHED_SMOKE_RUNS, BATCHED_TIMING_RUNS = 4, 16
DATASETS = {"fmnist": "28×28×1", "cifar10": "32×32×3"}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import dtp_bench.schemas  # noqa: F401

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def write_data(root: Path, n_fmnist: int = 256) -> None:
    from conftest import write_cifar10, write_idx_dataset

    write_idx_dataset(root / "FashionMNIST" / "raw", gz=False, n_train=n_fmnist, n_test=128)
    write_cifar10(root)


def one_run(overrides: list[str], run_dir: Path) -> dict:
    """Train through dtp_bench.run.run; the outcome as a dict (status, seconds, message)."""
    from dtp_bench.run import run

    start = time.perf_counter()
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            run(compose(overrides), run_dir=run_dir)
        # a batched job's runs are in seed_<s> folders, each a run of its own
        folders = [run_dir] if (run_dir / "summary.json").exists() else sorted(run_dir.glob("seed_*"))
        summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
        ok = bool(summaries) and all(s["status"] == "completed" and s["final_train_error"] is not None
                                     for s in summaries)
        return {"status": "completed" if ok else "failed", "seconds": round(time.perf_counter() - start, 2),
                "train_loss": [r.get("train_loss") for r in map(json.loads, (folders[0] / "metrics.jsonl").open())]}
    except SystemExit as exc:  # a config error: the combination is refused, with its message
        lines = [line for line in quiet.getvalue().splitlines() if "error" in line]
        return {"status": "refused" if exc.code == 2 else "failed", "message": (lines or [""])[-1][:300]}
    except Exception as exc:
        return {"status": "failed", "message": f"{exc.__class__.__name__}: {exc}"[:300],
                "traceback": traceback.format_exc()[-2000:]}


def smoke(root: Path, device: str, cuda: bool, work: Path) -> list[dict]:
    rows = []
    precisions = ["fp32", "bf16"] if cuda else ["fp32"]
    for dataset in DATASETS:
        for arch in ARCHS:
            for algorithm in ALGORITHMS:
                for precision in precisions:
                    for runs in [1] + ([BATCHED_SMOKE_RUNS] if arch in BATCHED_ARCHS else []):
                        name = f"{algorithm}-{arch}-{dataset}-{precision}-runs{runs}"
                        overrides = [f"algorithm={algorithm}", f"arch={arch}", f"dataset={dataset}",
                                     f"dataset.root={root}", "dataset.download=false", f"trainer.device={device}",
                                     f"trainer.precision={precision}", "trainer.epochs=1", "trainer.batch_size=32",
                                     "trainer.eval_batch_size=64", "trainer.limit_train_batches=3",
                                     "trainer.limit_eval_batches=1", "trainer.checkpoint=false",
                                     "trainer.progress=off", f"trainer.parallel_runs={runs}"]
                        result = one_run(overrides, work / name)
                        rows.append({"algorithm": algorithm, "arch": arch, "dataset": dataset,
                                     "precision": precision, "parallel_runs": runs, **result})
                    print(f"{name:40s} {result['status']:9s} {result.get('seconds', '')} {result.get('message', '')}",
                          flush=True)
    return rows


def epoch_timings(root: Path, device: str, work: Path, cuda: bool) -> list[dict]:
    """Two epochs each (the first pays compilation), eager and compiled; on CUDA also reduce-overhead
    (the compiled step captured in CUDA graphs); then 16 batched runs, eager (and on CUDA compiled)."""
    rows = []
    modes = ["off", "default"] + (["reduce-overhead"] if cuda else [])
    variants = [(mode, 1) for mode in modes] + [("off", BATCHED_TIMING_RUNS)]
    variants += [("reduce-overhead", BATCHED_TIMING_RUNS)] if cuda else []
    for algorithm in ("bp", "fw_dtp"):
        for mode, runs in variants:
            overrides = [f"algorithm={algorithm}", "arch=fc", "dataset=fmnist", f"dataset.root={root}",
                         "dataset.download=false", f"trainer.device={device}", "trainer.epochs=2",
                         f"trainer.compile={mode}", "trainer.checkpoint=false", "trainer.progress=off",
                         f"trainer.parallel_runs={runs}"]
            folder = work / f"epoch-{algorithm}-{mode}-runs{runs}"
            result = one_run(overrides, folder)
            metrics_file = folder / ("seed_0" if runs > 1 else "") / "metrics.jsonl"
            metrics = [json.loads(line) for line in metrics_file.open()] if metrics_file.exists() else []
            seconds = [m.get("epoch_seconds") for m in metrics]
            rows.append({"algorithm": algorithm, "arch": "fc 784-256x5-10", "examples": 60000,
                         "batch_size": compose(overrides).trainer.batch_size, "compile": mode,
                         "parallel_runs": runs, "status": result["status"], "epoch_seconds": seconds,
                         "runs_epochs_per_second": round(runs / seconds[-1], 4) if seconds and seconds[-1] else None,
                         "message": result.get("message", "")})
            print(f"epoch {algorithm} compile={mode} runs={runs}: {seconds} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/bench/gpu.json on CUDA, results/bench/gpu_check_cpu.json without")
    parser.add_argument("--skip-epochs", action="store_true", help="smoke only (no epoch timings)")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("no CUDA device here: running the CPU part only (every algorithm × arch in fp32; CPU epoch timings)",
              flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, full = tmp / "small", tmp / "full"
        write_data(small)
        rows = smoke(small, device, cuda, tmp / "runs")
        timings = []
        if not args.skip_epochs:
            write_data(full, n_fmnist=60000)
            timings = epoch_timings(full, device, tmp / "runs", cuda)
    failed = [r for r in rows if r["status"] not in ("completed", "refused")]
    failed += [t for t in timings if t["status"] != "completed"]
    report = {
        "cuda": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda_version": torch.version.cuda, "host": platform.node(),
        "command": " ".join(["python", "scripts/gpu_check.py", *(argv or sys.argv[1:])]),
        "seconds": round(time.perf_counter() - started, 1),
        "counts": {s: sum(r["status"] == s for r in rows) for s in ("completed", "refused", "failed", "diverged")},
        "smoke": rows, "epochs": timings,
        "data": "synthetic images written in the official IDX / CIFAR pickle formats (no real data)",
    }
    if args.out is None:
        args.out = REPO / "results" / "bench" / ("gpu.json" if cuda else "gpu_check_cpu.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['counts']}; {len(failed)} failures; {report['seconds']} s; wrote {args.out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
