"""Hydra callbacks (light: no torch). ``SweepTally`` ends a multirun with a count of its jobs by
status and a non-zero exit code when any job failed, so a script or a SLURM array notices.
``WritableOutput`` refuses an output folder that cannot be written before Hydra tries to log
into it (whose own error is a traceback that does not say why)."""
from __future__ import annotations

import errno
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_FAILED_EXIT = 1  # some job of the sweep failed (config/data error or crash); 2 stays "bad command"
BAD_COMMAND_EXIT = 2


def check_writable(folder: Path, key: str) -> None:
    """Create ``folder`` (as Hydra would) and write a probe file into it; exit 2 with one line
    naming the folder, the reason and the key to change when that fails."""
    probe = folder / ".write_probe"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        if exc.errno == errno.EROFS:
            reason = "the file system is read-only"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied"
        elif exc.errno == errno.ENOSPC:
            reason = "the disk is full"
        print(f"config error: {key}: cannot write the output folder {folder} ({reason}); point {key}=... "
              f"at a writable folder", file=sys.stderr)
        raise SystemExit(BAD_COMMAND_EXIT) from None


class WritableOutput(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def tally(sweep_dir: Path) -> Counter:
    """Runs under ``sweep_dir`` (a batched job's runs each) by the status in their summary.json."""
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
        print(f"sweep {sweep_dir}: {', '.join(parts)} ({sum(counts.values())} runs)", file=sys.stderr)
        if counts["failed"] or counts["unreadable"]:
            print("some jobs failed: their summary.json says why; rerun the same command with resume=true "
                  "to redo only those", file=sys.stderr)
            raise SystemExit(SWEEP_FAILED_EXIT)
