"""Benchmarks of the architectures issue, as functions ``scripts/bench.py`` can wire into sections.

* ``fa_dfa_epoch_cost``: the per-epoch training cost of fa and dfa relative to bp, on the fc and
  lenet archs with Fashion-MNIST's shapes (1×28×28 inputs, 10 classes, 60 000 training images).
  A training step's cost depends only on the shapes, so random batches stand in for the data.
* ``lc_cost``: forward+backward time of each of Bartunov et al.'s locally connected layers
  (MNIST and CIFAR stacks) against a convolution of the same shapes and the equivalent dense layer.

Both take the timer of ``scripts/bench.py`` (``time_interleaved``: warm-up, then the variants
take turns in every timed round) and return one dict per table row. Standalone:

    python scripts/bench_archs.py [--device cpu] [--repeats 3]
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dtp_bench.algorithms.base import build_algorithm  # noqa: E402
from dtp_bench.algorithms.schemas import BPConfig, FeedbackAlignmentConfig  # noqa: E402
from dtp_bench.nn.archs import CIFAR_STACK, MNIST_STACK  # noqa: E402
from dtp_bench.nn.blocks import build_network  # noqa: E402
from dtp_bench.nn.lc import LocallyConnected2d  # noqa: E402
from dtp_bench.nn.schemas import ConvPoolArchConfig, FCArchConfig  # noqa: E402

Timer = Callable[..., dict[str, list[float]]]  # time_interleaved(variants, device, warmup, repeats)
FMNIST_SHAPE, FMNIST_CLASSES, FMNIST_TRAIN = (1, 28, 28), 10, 60_000
ARCHS = {"fc": FCArchConfig, "lenet": ConvPoolArchConfig}  # conf/arch defaults


def fa_dfa_epoch_cost(timer: Timer, device: torch.device, archs: tuple[str, ...] = ("fc", "lenet"),
                      batch_size: int = 128, steps: int = 10, warmup: int = 1, repeats: int = 3) -> list[dict]:
    """Seconds per Fashion-MNIST epoch of bp, fa and dfa (Adam, the conf defaults), extrapolated
    from ``steps`` training steps; ``vs_bp`` is the ratio to bp on the same arch."""
    rows = []
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch_size, *FMNIST_SHAPE, device=device, generator=generator)
    y = torch.randint(0, FMNIST_CLASSES, (batch_size,), device=device, generator=generator)
    steps_per_epoch = math.ceil(FMNIST_TRAIN / batch_size)
    for arch in archs:
        torch.manual_seed(0)
        network = build_network(ARCHS[arch](name=arch), FMNIST_SHAPE, FMNIST_CLASSES)
        algorithms = {"bp": BPConfig(), "fa": FeedbackAlignmentConfig(name="fa"),
                      "dfa": FeedbackAlignmentConfig(name="dfa")}
        variants = {}
        for name, cfg in algorithms.items():
            algo = build_algorithm(cfg, copy.deepcopy(network), epochs=1).to(device)
            variants[name] = lambda algo=algo: [algo.train_step(x, y) for _ in range(steps)]
        times = timer(variants, device, warmup, repeats)
        bp_step = statistics.median(times["bp"]) / steps
        for name, seconds in times.items():
            step = statistics.median(seconds) / steps
            rows.append({"arch": arch, "algorithm": name, "ms_per_step": round(1e3 * step, 2),
                         "s_per_epoch": round(step * steps_per_epoch, 2), "vs_bp": round(step / bp_step, 2)})
    return rows


def _fwd_bwd(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
    return run


def lc_cost(timer: Timer, device: torch.device, batch_size: int = 128, warmup: int = 1,
            repeats: int = 3, dense_limit: int = 200_000_000) -> list[dict]:
    """Forward+backward ms per batch of each Bartunov LC layer, a Conv2d of the same shapes (tied
    weights) and the dense Linear with the same input and output sizes (skipped above
    ``dense_limit`` weights)."""
    rows = []
    stacks = {"mnist": ((1, 28, 28), MNIST_STACK), "cifar": ((3, 32, 32), CIFAR_STACK)}
    for stack_name, ((channels, height, width), stack) in stacks.items():
        for i, (kernel, out_channels, stride) in enumerate(stack):
            torch.manual_seed(0)
            lc = LocallyConnected2d(channels, out_channels, (height, width), kernel, stride).to(device)
            out_size = lc.out_size
            variants = {"lc": lc, "conv": nn.Conv2d(channels, out_channels, kernel, stride, kernel // 2).to(device)}
            n_in, n_out = channels * height * width, out_channels * out_size[0] * out_size[1]
            if n_in * n_out <= dense_limit:
                variants["dense"] = nn.Sequential(nn.Flatten(), nn.Linear(n_in, n_out)).to(device)
            x = torch.randn(batch_size, channels, height, width, device=device, requires_grad=True)
            times = timer({name: _fwd_bwd(layer, x) for name, layer in variants.items()}, device, warmup, repeats)
            row = {"layer": f"{stack_name}[{i}] ({kernel}x{kernel}, {out_channels}, {stride}) "
                            f"{channels}x{height}x{width}",
                   "lc_weights": lc.weight.numel()}
            for name, seconds in times.items():
                row[f"{name}_ms"] = round(1e3 * statistics.median(seconds), 1)
            row["lc_vs_conv"] = round(row["lc_ms"] / row["conv_ms"], 1)
            rows.append(row)
            channels, (height, width) = out_channels, out_size
    return rows


def _print_table(rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


def main() -> None:
    from bench import time_interleaved  # scripts/bench.py, next to this file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads\n")
    _print_table(fa_dfa_epoch_cost(time_interleaved, device, repeats=args.repeats))
    print()
    _print_table(lc_cost(time_interleaved, device, repeats=args.repeats))


if __name__ == "__main__":
    main()
