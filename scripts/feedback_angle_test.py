"""Ernoult et al. (2022)'s feedback-weight training test (their Fig. 4.3 / scalingDTP
``theorem_test.py``), on dtp_bench's L-DRL.

Per seed: LeNet without biases (feedback without biases either), one training batch of 256,
β = 0.4655. For each forward weight tensor, the angle between the flattened backprop gradient
(mean cross-entropy) and the L-DRL gradient (of Σ_i ½‖s_i − t_i‖² with the targets of the current
feedback) on that batch — before feedback training (random init) and after ``--iterations`` L-DRL
iterations per layer on that batch (σ = [0.2, 0.2, 0.1], SGD momentum 0.9, lr = [1e-4, 2.5e-3,
0.01] for [conv_1, fc1, fc2]). Writes angles.md and angles.csv to ``--out``.

    python scripts/feedback_angle_test.py --dataset fmnist --iterations 5000 --seeds 123 124 125 126 127
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dtp_bench.algorithms.scaling_dtp import ScalingDTP  # noqa: E402
from dtp_bench.algorithms.schemas import ScalingDTPConfig  # noqa: E402
from dtp_bench.config import OptimizerConfig  # noqa: E402
from dtp_bench.data import default_root, read_dataset  # noqa: E402
from dtp_bench.nn.archs import build_conv_pool  # noqa: E402
from dtp_bench.nn.schemas import ConvPoolArchConfig  # noqa: E402

LAYERS = ["conv_0", "conv_1", "fc1", "fc2"]
# Ernoult et al. 2022 (CIFAR-10, 5 seeds, 5000 iterations): angle (degrees) of each weight update
PAPER_BEFORE = {"conv_0": "≈80–95", "conv_1": "≈80–95", "fc1": "≈80–95", "fc2": "≈0"}
PAPER_AFTER = {"conv_0": "27–38", "conv_1": "6–7.6", "fc1": "≈2.6", "fc2": "≈0"}
NOTE = ("Which feedback sets which angle: a block's update follows its target, which comes down through "
        "the feedback of the blocks above it, so conv_0's angle depends on the feedback of conv_1, fc1 "
        "and fc2, conv_1's on fc1's and fc2's, fc1's on fc2's; fc2 (the logits) gets β·∂CE_sum/∂logits "
        "directly, hence 0°.")
NORMALISATION = {"fmnist": ([0.2860], [0.3530]), "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])}


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """scalingDTP's compute_dist_angle: whole flattened tensors, cos clamped, degrees."""
    a, b = a.flatten().double(), b.flatten().double()
    cos = (a @ b) / (a.norm() * b.norm() + 1e-8)
    return math.degrees(math.acos(cos.clamp(-1.0, 1.0).item()))


def gradient_angles(algo: ScalingDTP, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    net = algo.network
    weights = [block.weight_op.weight for block in net.blocks]
    net.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    bp = [w.grad.clone() for w in weights]
    net.zero_grad(set_to_none=True)
    algo.forward_update(x, y)
    dtp = [w.grad.clone() for w in weights]
    net.zero_grad(set_to_none=True)
    return [angle(p, q) for p, q in zip(bp, dtp)]


def one_batch(dataset: str, seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_dataset(dataset, str(default_root()), False)["train"]
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:batch]
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in NORMALISATION[dataset])
    return (images[idx].float() / 255 - mean) / std, labels[idx]


def run_seed(dataset: str, seed: int, iterations: list[int], batch: int) -> tuple[list[float], list[float]]:
    x, y = one_batch(dataset, seed, batch)
    torch.manual_seed(seed)
    net = build_conv_pool(ConvPoolArchConfig(bias=False), tuple(x.shape[1:]), 10)
    cfg = ScalingDTPConfig(target_step=0.4655, feedback_bias=False, feedback_iterations=list(iterations),
                           noise=[0.2, 0.2, 0.1],
                           feedback_optimizer=OptimizerConfig(name="sgd", lr=[1e-4, 2.5e-3, 0.01], momentum=0.9),
                           optimizer=OptimizerConfig(name="sgd", lr=1e-3, momentum=0.9))  # never stepped
    algo = ScalingDTP(cfg, net, 1)
    before = gradient_angles(algo, x, y)
    algo.train_feedback(x, y)  # the forward weights are never stepped
    after = gradient_angles(algo, x, y)
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["fmnist", "cifar10"], default="fmnist")
    parser.add_argument("--iterations", type=int, nargs="+", default=[5000],
                        help="L-DRL iterations per layer (paper: 5000): one value, or three for [conv_1, fc1, fc2]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[123, 124, 125, 126, 127])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="results/feedback_angles/")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.iterations) not in (1, 3):
        parser.error("--iterations takes one value or three ([conv_1, fc1, fc2])")
    iterations = args.iterations * 3 if len(args.iterations) == 1 else args.iterations
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    start = time.perf_counter()
    for seed in args.seeds:
        before, after = run_seed(args.dataset, seed, iterations, args.batch)
        for name, b, a in zip(LAYERS, before, after):
            rows.append({"dataset": args.dataset, "seed": seed, "iterations": "/".join(map(str, iterations)),
                         "layer": name,
                         "angle_before": round(b, 3), "angle_after": round(a, 3)})
        print(f"seed {seed}: before {[round(b, 1) for b in before]}, after {[round(a, 1) for a in after]} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    with open(out / "angles.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def stats(name: str, key: str) -> str:
        values = [r[key] for r in rows if r["layer"] == name]
        mean = sum(values) / len(values)
        return f"{mean:.1f} [{min(values):.1f}–{max(values):.1f}]"

    reduced = (" (**reduced** from the paper's 5000 to fit the CPU budget)" if min(iterations) < 5000 else "")
    lines = ["# L-DRL feedback training test: angle (°) between the BP and the L-DRL weight update",
             "",
             f"LeNet without biases, {args.dataset}, one batch of {args.batch} per seed, seeds "
             f"{', '.join(map(str, args.seeds))}, β = 0.4655, {'/'.join(map(str, iterations))} L-DRL "
             f"iterations for the feedback of [conv_1, fc1, fc2]"
             f"{reduced}, σ = [0.2, 0.2, 0.1], feedback lr = [1e-4, 2.5e-3, 0.01] (SGD momentum 0.9). "
             f"Ours: mean [min–max] over seeds. Paper: Ernoult et al. 2022 on CIFAR-10 with 5000 "
             f"iterations.",
             "",
             "| layer | ours, random init | paper, random init | ours, after L-DRL | paper, after L-DRL |",
             "|---|---|---|---|---|"]
    for name in LAYERS:
        lines.append(f"| {name} | {stats(name, 'angle_before')} | {PAPER_BEFORE[name]} | "
                     f"{stats(name, 'angle_after')} | {PAPER_AFTER[name]} |")
    lines += ["", NOTE, "", f"Wall time {time.perf_counter() - start:.0f} s, {torch.get_num_threads()} threads."]
    (out / "angles.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
