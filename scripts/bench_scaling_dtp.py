"""Seconds per training batch of scaling_dtp (L-DRL): the plain per-layer loop vs lock-step.

    python scripts/bench_scaling_dtp.py [--arch lenet|fc] [--batch 256] [--iterations 41 51 24]
                                        [--repeats 2] [--out results/bench/scaling_dtp.json]

Default: LeNet on random 32×32×3 inputs (CIFAR-10 geometry), batch 256, K = [41, 51, 24] and the
rest of the LeNet CIFAR-10 hyperparameters (conf/algorithm/scaling_dtp.yaml). Each mode runs one
warm-up batch, then ``--repeats`` timed batches (feedback phase + forward step) from the same
start, seeds and data (after a one-iteration warm-up batch); wall and process CPU time are both
recorded (the CPU time is the steadier figure on a shared machine); the result also records the
largest parameter difference between modes (float32: rounding; tests/test_scaling_dtp.py checks
the equivalence in float64).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dtp_bench.algorithms.scaling_dtp import ScalingDTP  # noqa: E402
from dtp_bench.algorithms.schemas import ScalingDTPConfig  # noqa: E402
from dtp_bench.config import OptimizerConfig  # noqa: E402
from dtp_bench.nn.archs import build_conv_pool  # noqa: E402
from dtp_bench.nn.blocks import build_fc  # noqa: E402
from dtp_bench.nn.schemas import ConvPoolArchConfig, FCArchConfig  # noqa: E402

LENET_NOISE = [0.41640228838517584, 0.3826261146623929, 0.1395382069358601]
LENET_FB_LR = [0.0007188427494432325, 0.00012510321884615596, 0.03541466958291287]


def make_algorithm(arch: str, iterations: list[int], lockstep: bool, seed: int = 0) -> tuple[ScalingDTP, tuple]:
    torch.manual_seed(seed)
    if arch == "lenet":
        shape = (3, 32, 32)
        net = build_conv_pool(ConvPoolArchConfig(), shape, 10)
        noise, fb_lr = LENET_NOISE, LENET_FB_LR
    else:
        shape = (784,)
        net = build_fc(FCArchConfig(hidden=[256] * 5, activation="tanh"), shape, 10)
        noise, fb_lr = 0.1, 1e-3
    n_fb = len(net) - 1
    ks = iterations if len(iterations) == n_fb else [iterations[0]] * n_fb
    cfg = ScalingDTPConfig(feedback_iterations=ks, noise=noise, lockstep=lockstep,
                           feedback_optimizer=OptimizerConfig(name="sgd", lr=fb_lr, momentum=0.9),
                           optimizer=OptimizerConfig(name="sgd", lr=0.03618, momentum=0.9, weight_decay=1e-4))
    return ScalingDTP(cfg, net, 1), shape


def time_mode(arch: str, iterations: list[int], lockstep: bool, batch: int,
              repeats: int) -> tuple[list[float], list[float], ScalingDTP]:
    algo, shape = make_algorithm(arch, iterations, lockstep)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen))
            for _ in range(repeats + 1)]
    torch.manual_seed(2)
    iterations = dict(algo.iterations)
    algo.iterations = {i: 1 for i in iterations}  # warm-up batch: one iteration per layer
    algo.train_step(*data[0])
    algo.iterations = iterations
    wall, cpu = [], []
    for x, y in data[1:]:
        start, start_cpu = time.perf_counter(), time.process_time()
        algo.train_step(x, y)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu, algo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["lenet", "fc"], default="lenet")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iterations", type=int, nargs="+", default=[41, 51, 24])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    parser.add_argument("--out", default="results/bench/scaling_dtp.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results = {}
    algos = {}
    for name, lockstep in (("per_layer", False), ("lockstep", True)):
        wall, cpu, algos[name] = time_mode(args.arch, args.iterations, lockstep, args.batch, args.repeats)
        results[name] = {"seconds_per_batch": min(wall), "cpu_seconds_per_batch": min(cpu),
                         "all_seconds": wall, "all_cpu_seconds": cpu}
        print(f"{name:10s} wall {min(wall):8.3f} s/batch, process CPU {min(cpu):8.3f} s/batch "
              f"(runs: {', '.join(f'{t:.3f}' for t in wall)})", flush=True)
    diff = max((p - q).abs().max().item() for p, q in zip(algos["per_layer"].parameters(),
                                                         algos["lockstep"].parameters()))
    ratio = results["per_layer"]["seconds_per_batch"] / results["lockstep"]["seconds_per_batch"]
    cpu_ratio = results["per_layer"]["cpu_seconds_per_batch"] / results["lockstep"]["cpu_seconds_per_batch"]
    load = os.getloadavg()[0]
    print(f"speed-up {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time (load average {load:.1f}); "
          f"max |Δparam| between modes after {args.repeats + 1} batches: {diff:.2e} (float32)")
    record = {"arch": args.arch, "batch": args.batch, "feedback_iterations": args.iterations,
              "input": "random 32x32x3" if args.arch == "lenet" else "random 784", "timed_batches": args.repeats,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "device": "cpu",
              "load_average_1min": load,
              **results, "speedup": ratio, "cpu_time_speedup": cpu_ratio, "max_param_diff": diff}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
