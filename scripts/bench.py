"""Speed benchmarks (`make bench`): our runner against plain PyTorch, one section at a time.

    python scripts/bench.py                      # every section
    python scripts/bench.py --only bp_fc_fmnist  # one (repeatable)
    python scripts/bench.py --list

Each section prints a markdown table and writes results/bench/<section>.json with the hardware
and torch version. To add a section, write ``def my_section(args) -> list[dict]`` (one dict per
table row) and decorate it with ``@section("my_section", "what it measures")``; use
``time_interleaved`` to time competing variants in turn (warm-up, then the median of repeats).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SECTIONS: dict[str, tuple[Callable[[argparse.Namespace], list[dict]], str]] = {}


def section(name: str, description: str = ""):
    def register(fn):
        SECTIONS[name] = (fn, description)
        return fn
    return register


# ---------------------------------------------------------------- helpers for sections
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(variants: dict[str, Callable[[], object]], device: torch.device,
                     warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``warmup`` untimed calls each, then ``repeats`` timed
    rounds in which the variants take turns (so a busy machine slows them alike)."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
            sync(device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import dtp_bench.schemas  # noqa: F401

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def build_trainer(overrides: list[str], run_dir: Path):
    from dtp_bench.config import validate
    from dtp_bench.trainer import Trainer

    cfg = compose(overrides)
    return Trainer(cfg, validate(cfg), run_dir)


def hardware(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "host": platform.node()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------- sections
@section("bp_fc_fmnist", "BP epoch, FC 784-256x5-10, Fashion-MNIST, batch 256, Adam: trainer vs plain loop")
def bp_fc_fmnist(args: argparse.Namespace) -> list[dict]:
    from torch import nn

    batch = 256
    overrides = ["algorithm=bp", "arch=fc", "arch.hidden=[256,256,256,256,256]", "dataset=fmnist",
                 f"trainer.batch_size={batch}", f"trainer.device={args.device}", "trainer.progress=off",
                 "trainer.checkpoint=false", "trainer.precision=fp32"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(overrides, Path(tmp))
    device, data = trainer.device, trainer.data

    # the plain loop: the same normalised images, already in memory as one float tensor
    x_all = data.normalise(data.train_x).flatten(1).contiguous()
    y_all = data.train_y
    n = len(y_all)
    sizes = [784, 256, 256, 256, 256, 256, 10]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator(device=device).manual_seed(0)

    def plain_epoch() -> None:
        order = torch.randperm(n, device=device, generator=generator)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    epoch = iter(range(10**9))
    times = time_interleaved({"dtp_bench trainer": lambda: trainer.train_epoch(next(epoch)),
                              "plain PyTorch": plain_epoch}, device, args.warmup, args.repeats)
    t_ours, t_plain = times["dtp_bench trainer"], times["plain PyTorch"]
    ours, plain = statistics.median(t_ours), statistics.median(t_plain)
    # the median of the per-round ratios: each round times both loops back to back, so load from
    # other processes on a shared machine mostly cancels out
    ratio = statistics.median(a / b for a, b in zip(t_ours, t_plain))
    return [
        {"variant": "plain PyTorch", "median_s_per_epoch": round(plain, 3), "min_s": round(min(t_plain), 3),
         "examples_per_s": round(n / plain), "times_s": [round(t, 3) for t in t_plain]},
        {"variant": "dtp_bench trainer", "median_s_per_epoch": round(ours, 3), "min_s": round(min(t_ours), 3),
         "examples_per_s": round(n / ours), "times_s": [round(t, 3) for t in t_ours],
         "ratio": round(ratio, 3), "ratio_of_medians": round(ours / plain, 3),
         "ratio_of_mins": round(min(t_ours) / min(t_plain), 3), "goal": "ratio <= 1.15", "ok": ratio <= 1.15},
    ]


ALGORITHMS = ("bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fw_dtp", "drl", "scaling_dtp")


@section("algorithm_cost", "seconds per Fashion-MNIST epoch of every algorithm (conf defaults), FC 784-256x5-10, "
                           "batch 128, relative to bp; extrapolated from --cost-batches batches")
def algorithm_cost(args: argparse.Namespace) -> list[dict]:
    batch, n_batches = 128, args.cost_batches
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ALGORITHMS:
            trainers[name] = build_trainer(
                [f"algorithm={name}", "arch=fc", "arch.hidden=[256,256,256,256,256]", "dataset=fmnist",
                 f"trainer.batch_size={batch}", f"trainer.limit_train_batches={n_batches}",
                 f"trainer.device={args.device}", "trainer.progress=off", "trainer.checkpoint=false"],
                Path(tmp) / name)
    # epoch 1, not 0: pre-training epochs (drl) are a one-off, feedback epochs of the alternating
    # schedule and drl's extra epochs are part of every epoch and are timed with it
    times = time_interleaved({name: (lambda t=t: t.train_epoch(1)) for name, t in trainers.items()},
                             trainers["bp"].device, args.warmup, args.repeats)
    batches_per_epoch = trainers["bp"].data.batches_per_epoch(batch)
    scale = batches_per_epoch / n_batches
    bp = statistics.median(times["bp"])
    return [{"algorithm": name, "s_per_epoch": round(statistics.median(t) * scale, 2),
             "vs_bp": round(statistics.median(t) / bp, 2),
             "schedule": getattr(trainers[name].typed.algorithm, "schedule", "-")}
            for name, t in times.items()]


@section("fa_dfa_cost", "fa and dfa per-epoch cost relative to bp on fc and lenet (Fashion-MNIST shapes)")
def fa_dfa_cost(args: argparse.Namespace) -> list[dict]:
    from bench_archs import fa_dfa_epoch_cost

    return fa_dfa_epoch_cost(time_interleaved, torch.device(args.device), warmup=args.warmup,
                             repeats=args.repeats)


@section("lc_cost", "locally connected layer forward+backward vs conv and dense equivalents (Bartunov stacks)")
def lc_cost(args: argparse.Namespace) -> list[dict]:
    from bench_archs import lc_cost as measure

    return measure(time_interleaved, torch.device(args.device), warmup=args.warmup, repeats=args.repeats)


def _repeat(op: Callable[[], object], calls: int) -> None:
    for _ in range(calls):
        op()  # the result is dropped at once, as a temporary in a training step would be


@section("elementwise_cost", "activations and the noise draw against the matmul of one FC layer "
                             "(batch 256, widths 164 and 256): where target propagation's time goes on a CPU")
def elementwise_cost(args: argparse.Namespace) -> list[dict]:
    # DTP-family algorithms run many small layers per batch, so an activation or a randn that costs as
    # much as the layer's matmul changes their cost relative to BP from one machine to another
    device = torch.device(args.device)
    rows = []
    for width in (164, 256):
        h = torch.randn(256, width, device=device)
        weight = torch.randn(width, width, device=device) / width ** 0.5
        generator = torch.Generator(device=device).manual_seed(0)
        ops = {
            "matmul": lambda: h @ weight,
            "tanh": lambda: torch.tanh(h),
            "sigmoid": lambda: torch.sigmoid(h),
            "relu": lambda: torch.relu(h),
            "elu": lambda: torch.nn.functional.elu(h),
            "randn (own generator)": lambda: torch.randn(h.shape, generator=generator, device=device),
        }
        calls = 20  # per timed round: one op is too short to time alone
        variants = {name: (lambda op=op: _repeat(op, calls)) for name, op in ops.items()}
        times = time_interleaved(variants, device, warmup=args.warmup, repeats=args.repeats)
        matmul = statistics.median(times["matmul"])
        for name, seconds in times.items():
            median = statistics.median(seconds)
            rows.append({"width": width, "op": name, "microseconds": round(median / calls * 1e6, 1),
                         "relative to matmul": round(median / matmul, 2)})
    return rows


# ---------------------------------------------------------------- output
PARALLEL_NETS = {  # (hidden widths, batch size)
    "fc 784-256x5-10, batch 128 (the conf default)": ([256] * 5, 128),
    "fc 784-64x2-10, batch 32 (small: per-step overhead dominates)": ([64, 64], 32),
}


@section("parallel_runs", "runs x epochs per second: K seeds one after another (the per-run loop of the "
                          "reference code) against trainer.parallel_runs=K batched (K = 1, 4, 16); FC nets on "
                          "Fashion-MNIST-shaped data, --cost-batches batches per timed epoch")
def parallel_runs(args: argparse.Namespace) -> list[dict]:
    from dtp_bench.config import validate
    from dtp_bench.parallel import ParallelTrainer

    rows = []
    for algorithm in ("bp", "fw_dtp"):
        for net, (hidden, batch) in PARALLEL_NETS.items():
            base = [f"algorithm={algorithm}", "arch=fc", f"arch.hidden=[{','.join(map(str, hidden))}]",
                    "dataset=fmnist", f"trainer.batch_size={batch}", f"trainer.device={args.device}",
                    "trainer.progress=off", "trainer.checkpoint=false",
                    f"trainer.limit_train_batches={args.cost_batches}"]
            with tempfile.TemporaryDirectory() as tmp:
                single = build_trainer(base, Path(tmp) / "single")
                variants = {"per-run loop": single}
                for k in (1, 4, 16):
                    cfg = compose(base + [f"trainer.parallel_runs={k}"])
                    variants[f"batched K={k}"] = ParallelTrainer(cfg, validate(cfg), Path(tmp) / f"k{k}")
                counters = {name: iter(range(10**9)) for name in variants}
                times = time_interleaved({name: (lambda t=t, c=counters[name]: t.train_epoch(next(c)))
                                          for name, t in variants.items()}, torch.device(args.device),
                                         args.warmup, args.repeats)
            full_epoch = -(-60000 // batch) / args.cost_batches  # a timed epoch is this fraction of a real one
            reference = 1.0 / statistics.median(times["per-run loop"])
            widths = [784, *hidden, 10]
            # BP's matmul work per step ≈ 3 × the forward's 2·B·Σ fan_in·fan_out (forward, input and weight
            # gradients): what the arithmetic ceiling below is compared with
            bp_flops = 3 * 2 * batch * sum(a * b for a, b in zip(widths[:-1], widths[1:])) * args.cost_batches
            for name, seconds in times.items():
                runs = 1 if name == "per-run loop" else int(name.split("=")[1])
                throughput = runs / statistics.median(seconds)
                row = {"algorithm": algorithm, "net": net, "variant": name, "runs": runs,
                       "median_s_per_timed_epoch": round(statistics.median(seconds), 4),
                       "runs_epochs_per_s": round(throughput / full_epoch, 4),
                       "speedup_vs_per_run_loop": round(throughput / reference, 2)}
                if algorithm == "bp":
                    row["approx_matmul_gflop_per_s"] = round(bp_flops * throughput / 1e9, 1)
                rows.append(row)
    rows.append({"algorithm": "-", "net": "torch.mm 2048 x 2048 fp32 (the machine's arithmetic ceiling)",
                 "variant": "ceiling", "approx_matmul_gflop_per_s": round(matmul_ceiling(args), 1)})
    return rows


def matmul_ceiling(args: argparse.Namespace) -> float:
    """GFLOP/s of one large fp32 matrix product on the device: what no batching can exceed."""
    device = torch.device(args.device)
    a, b = (torch.randn(2048, 2048, device=device) for _ in range(2))
    times = time_interleaved({"mm": lambda: torch.mm(a, b)}, device, 2, 9)["mm"]
    return 2 * 2048 ** 3 / statistics.median(times) / 1e9


def markdown_table(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this section (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per variant first")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--cost-batches", type=int, default=40,
                        help="batches per timed epoch in algorithm_cost (extrapolated to a full epoch)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "results" / "bench")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.list:
        for name, (_, description) in SECTIONS.items():
            print(f"{name:24s} {description}")
        return 0
    unknown = [name for name in args.only or [] if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    from dtp_bench.config import ConfigError
    from dtp_bench.data import DataError

    device = torch.device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in args.only or list(SECTIONS):
        fn, description = SECTIONS[name]
        print(f"\n## {name}: {description}\n", flush=True)
        try:
            rows = fn(args)
        except (ConfigError, DataError) as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            status = 1
            continue
        print(markdown_table(rows), flush=True)
        record = {"section": name, "description": description, "rows": rows,
                  "warmup": args.warmup, "repeats": args.repeats, "hardware": hardware(device),
                  "date": datetime.datetime.now().isoformat(timespec="seconds")}
        path = args.out_dir / f"{name}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwritten to {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
