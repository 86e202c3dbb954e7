"""Which (algorithm, arch, dataset) combinations some paper ran, read from the experiment presets
in conf/experiment: a run outside all of them is told so once (it runs: a new combination is a
legitimate experiment, but no published number or tuned hyperparameter stands behind it)."""
from __future__ import annotations

import functools
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parent.parent / "conf"


@functools.cache
def _group_name(group: str, option: str) -> str:
    """The ``name:`` field of conf/<group>/<option>.yaml (several variants share one method)."""
    path = CONF / group / f"{option}.yaml"
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("name", option)
    except (OSError, yaml.YAMLError):
        return option


@functools.cache
def paper_combinations(conf: Path = CONF) -> frozenset[tuple[str, str, str]]:
    combos = set()
    for preset in sorted((conf / "experiment").rglob("*.yaml")):
        try:
            defaults = (yaml.safe_load(preset.read_text()) or {}).get("defaults") or []
        except (OSError, yaml.YAMLError):
            continue
        chosen = {}
        for entry in defaults:
            if isinstance(entry, dict):
                for key, option in entry.items():
                    group = str(key).removeprefix("override ").strip("/")
                    if group in ("algorithm", "arch", "dataset"):
                        chosen[group] = _group_name(group, str(option))
        if len(chosen) == 3:
            combos.add((chosen["algorithm"], chosen["arch"], chosen["dataset"]))
    return frozenset(combos)


def outside_papers_notice(algorithm: str, arch: str, dataset: str) -> str | None:
    """One line when no preset runs this combination, else None."""
    combos = paper_combinations()
    if (algorithm, arch, dataset) in combos:
        return None
    nearest = sorted({f"{d}" for a, r, d in combos if (a, r) == (algorithm, arch)})
    hint = f" (presets run {algorithm} on {arch} with {', '.join(nearest)})" if nearest else ""
    return (f"note: no paper this tool reproduces ran algorithm={algorithm} arch={arch} dataset={dataset}"
            f"{hint}; there is no published number to compare with and its hyperparameters are untuned here")
