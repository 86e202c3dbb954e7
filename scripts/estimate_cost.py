"""Count the floating-point operations of a run before you run it, and turn them into wall time.

    python scripts/estimate_cost.py experiment=ernoult2022/lenet_fmnist/l_drl [--tflops 5 20] [--seconds-per-epoch S]
    python scripts/estimate_cost.py ... --json > results/estimates/<name>.json
    python scripts/estimate_cost.py --summarize results/estimates     # their table: results/estimates/README.md

Composes the config exactly as train.py would (any overrides), builds the network for the dataset's
shapes (no data files needed: random inputs), and counts with torch's FLOP formulas the matmul /
convolution FLOPs, backward passes included, of

- one training batch (``train_step``: the forward update and, for parallel schedules, the feedback
  training of that batch, e.g. L-DRL's K iterations per layer),
- one batch of feedback-only training (the epochs of ``feedback_pretrain_epochs``,
  ``extra_feedback_epochs`` and alternating schedules, which run before forward epochs),
- one evaluation batch,

then multiplies by the batches of the whole run. Elementwise operations are not counted, so this is a
lower bound on the work. Wall time = FLOPs / sustained throughput, for each ``--tflops`` (an
assumption you choose: small nets at batch 128–256 rarely sustain more than a fraction of a GPU's
peak). ``--seconds-per-epoch`` (a measured epoch of the same config on some machine) gives that
machine's sustained throughput, to calibrate the assumption.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dtp_bench.schemas  # noqa: E402,F401  (registers the config schemas)
from dtp_bench.algorithms.base import build_algorithm  # noqa: E402
from dtp_bench.config import validate  # noqa: E402
from dtp_bench.data import SPECS  # noqa: E402
from dtp_bench.nn.blocks import build_network  # noqa: E402


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


class Counter(TorchDispatchMode):
    """Counts the aten operations dispatched (on a GPU each is at least one kernel launch) and their
    FLOPs with torch's FLOP formulas (FlopCounterMode's own module hooks break autograd.grad)."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count(fn) -> tuple[int, int]:
    """(FLOPs, aten ops) of ``fn()``."""
    with Counter() as counter:
        fn()
    return counter.flops, counter.ops


def estimate(overrides: list[str]) -> dict:
    typed = validate(compose(overrides))
    t, spec = typed.trainer, SPECS[typed.dataset.name]
    torch.manual_seed(typed.seed)
    shape = (typed.dataset.pca_components,) if typed.dataset.pca_components else (spec.channels, spec.size, spec.size)
    network = build_network(typed.arch, shape, spec.num_classes)
    algorithm = build_algorithm(typed.algorithm, network, t.epochs)
    x = torch.randn(t.batch_size, *shape)
    y = torch.randint(spec.num_classes, (t.batch_size,))
    algorithm.train()
    algorithm.train_step(x, y)  # lazily built state (optimizer slots) out of the count
    train = count(lambda: algorithm.train_step(x, y))
    first, later = algorithm.feedback_epochs_before(0), algorithm.feedback_epochs_before(1)
    feedback = count(lambda: algorithm.train_feedback(x, y)) if first or later else (0, 0)
    algorithm.eval()
    evaluation = count(lambda: algorithm.predict(torch.randn(t.eval_batch_size, *shape)))
    batches = -(-(spec.train_size - t.val_size) // t.batch_size)
    eval_batches = -(-spec.test_size // t.eval_batch_size) + -(-t.val_size // t.eval_batch_size)
    # the trainer's caps, as it applies them (a quick check costs what it runs)
    if t.limit_train_batches is not None:
        batches = min(batches, t.limit_train_batches)
    if t.limit_eval_batches is not None:
        eval_batches = min(-(-spec.test_size // t.eval_batch_size), t.limit_eval_batches) + (
            min(-(-t.val_size // t.eval_batch_size), t.limit_eval_batches) if t.val_size else 0)
    # one later epoch (what a measured epoch_seconds is): its feedback-only passes, training, evaluation
    epoch = [batches * (tr + later * fb) + eval_batches * ev for tr, fb, ev in zip(train, feedback, evaluation)]
    total = [t.epochs * e + (first - later) * batches * fb for e, fb in zip(epoch, feedback)]
    return {"overrides": overrides, "algorithm": typed.algorithm.name, "dataset": typed.dataset.name,
            "epochs": t.epochs, "batch_size": t.batch_size, "batches_per_epoch": batches,
            "feedback_only_epochs": {"before_first": first, "before_each_later": later},
            "flops": {"train_batch": train[0], "feedback_batch": feedback[0], "eval_batch": evaluation[0],
                      "epoch": epoch[0], "total": total[0]},
            "ops": {"train_batch": train[1], "feedback_batch": feedback[1], "eval_batch": evaluation[1],
                    "epoch": epoch[1], "total": total[1]}}


def hours(result: dict, tflops: float, launch_us: float) -> float:
    """FLOPs at a sustained throughput plus one launch latency per operation (small nets are
    launch-bound on a GPU)."""
    return (result["flops"]["total"] / (tflops * 1e12) + result["ops"]["total"] * launch_us * 1e-6) / 3600


def summarize(folder: Path) -> Path:
    """A markdown table of the --json estimates in ``folder``."""
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    throughputs = sorted({label for r in results for label in r["hours"]}, key=lambda t: float(t.split()[0]))
    lines = ["# Cost estimates", "",
             "Written by `python scripts/estimate_cost.py --summarize " + str(folder)
             + "` from the `--json` files here "
             "(`scripts/run_here.sh` has the commands). FLOPs are counted (matmuls and convolutions, backward "
             "included; elementwise work is not, so they are a lower bound); hours assume the stated sustained "
             "throughput plus a launch latency per operation.", "",
             "| config | epochs | batches / epoch | PFLOP | operations | "
             + " | ".join(f"hours at {t} + {results[0]['launch_us']:g} µs/op" for t in throughputs) + " |",
             "|" + "---|" * (5 + len(throughputs))]
    for r in results:
        hours_text = " | ".join(f"{r['hours'][t]:.2f}" if t in r["hours"] else "" for t in throughputs)
        lines.append(f"| `{' '.join(r['overrides'])}` | {r['epochs']} | {r['batches_per_epoch']} | "
                     f"{r['flops']['total'] / 1e15:.3g} | {r['ops']['total']:.3g} | {hours_text} |")
    out = folder / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*",
                        help="train.py overrides, e.g. experiment=ernoult2022/lenet_fmnist/l_drl")
    parser.add_argument("--tflops", type=float, nargs="+", default=[5.0, 20.0],
                        help="sustained throughputs (TFLOP/s) to convert FLOPs into wall time (default: 5 20)")
    parser.add_argument("--launch-us", type=float, default=10.0,
                        help="microseconds per operation (GPU kernel launch and sync; default 10)")
    parser.add_argument("--seconds-per-epoch", type=float,
                        help="a measured epoch (not the first) of this config: prints that machine's FLOP/s")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    parser.add_argument("--summarize", type=Path, metavar="DIR", help="write DIR/README.md from DIR/*.json and stop")
    args = parser.parse_args(argv)
    if args.summarize:
        print(f"wrote {summarize(args.summarize)}", file=sys.stderr)
        return 0
    result = estimate(args.overrides)
    result["launch_us"] = args.launch_us
    result["hours"] = {f"{tf:g} TFLOP/s": hours(result, tf, args.launch_us) for tf in args.tflops}
    if args.seconds_per_epoch:
        result["measured_gflops"] = result["flops"]["epoch"] / args.seconds_per_epoch / 1e9
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    f, o, fb = result["flops"], result["ops"], result["feedback_only_epochs"]
    print(f"{' '.join(args.overrides) or '(defaults)'}: {result['algorithm']} on {result['dataset']}, "
          f"{result['epochs']} epochs x {result['batches_per_epoch']} batches of {result['batch_size']}"
          + (f"; feedback-only epochs: {fb['before_first']} before the first, {fb['before_each_later']} before each "
             f"later one" if fb["before_first"] or fb["before_each_later"] else ""))
    print(f"  per training batch {f['train_batch'] / 1e9:.3g} GFLOP in {o['train_batch']} ops"
          + (f"; per feedback-only batch {f['feedback_batch'] / 1e9:.3g} GFLOP in {o['feedback_batch']} ops"
             if o["feedback_batch"] else "")
          + f"; per epoch {f['epoch'] / 1e12:.3g} TFLOP; whole run {f['total'] / 1e15:.3g} PFLOP, {o['total']:.3g} ops")
    for label, h in result["hours"].items():
        per_epoch = h * 60 / result["epochs"]
        print(f"  at a sustained {label} + {args.launch_us:g} us per op: {h:.2f} h ({per_epoch:.2f} min per epoch)")
    if "measured_gflops" in result:
        print(f"  measured: {args.seconds_per_epoch:g} s per epoch = {result['measured_gflops']:.1f} GFLOP/s sustained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
