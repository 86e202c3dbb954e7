"""Evaluate a run's checkpoint on its test (or validation, or training) split.

    python scripts/evaluate.py outputs/2026-12-04/17-57-16_shibuya2023+fmnist+bp
    python scripts/evaluate.py RUN_DIR --checkpoint best --split val --json

The run is rebuilt from its own configuration (.hydra/config.yaml, else the one stored in the
checkpoint); the data are read as the run read them (--data-root to point elsewhere)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory (holds checkpoint.pt and/or best.pt)")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last",
                        help="last: checkpoint.pt (the last completed epoch); best: best.pt (trainer.save_best)")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--data-root", default=None, help="where the dataset files are, if not where the run read them")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)

    from dtp_bench.config import ConfigError
    from dtp_bench.data import DataError
    from dtp_bench.evaluate import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.run_dir, args.checkpoint, args.split, args.device, args.data_root)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        top5 = "" if result["top5_error"] is None else f", top-5 {result['top5_error']:.2f}%"
        print(f"{result['split']} error {result['error']:.2f}%{top5} — {result['file']} (epoch {result['epoch']}) "
              f"of {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
