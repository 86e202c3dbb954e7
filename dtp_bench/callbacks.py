"""Hydra callbacks (light: no torch). ``SweepTally`` ends a multirun with a count of its jobs by
status and a non-zero exit code when any job failed, so a script or a SLURM array notices."""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_FAILED_EXIT = 1  # some job of the sweep failed (config/data error or crash); 2 stays "bad command"


def tally(sweep_dir: Path) -> Counter:
    """Jobs under ``sweep_dir`` by the status in their summary.json."""
    counts: Counter = Counter()
    for path in sorted(sweep_dir.rglob("summary.json")):
        try:
            counts[json.loads(path.read_text()).get("status", "unknown")] += 1
        except (OSError, ValueError, AttributeError):
            counts["unreadable"] += 1
    return counts


class SweepTally(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        counts = tally(sweep_dir)
        if not counts:
            return
        order = ["completed", "diverged", "failed", "interrupted", "running"]
        parts = [f"{counts[s]} {s}" for s in order if counts[s]] + \
                [f"{n} {s}" for s, n in counts.items() if s not in order]
        print(f"sweep {sweep_dir}: {', '.join(parts)} ({sum(counts.values())} jobs)", file=sys.stderr)
        if counts["failed"] or counts["unreadable"]:
            print(f"some jobs failed: their summary.json says why; rerun the same command with resume=true "
                  f"to redo only those", file=sys.stderr)
            raise SystemExit(SWEEP_FAILED_EXIT)
