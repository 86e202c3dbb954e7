#!/usr/bin/env bash
# Run every cell preset under conf/experiment/<PREFIX>... as one Hydra multirun per prefix.
#
#   scripts/run_table.sh bartunov2018 seed=1,2,3                   # Bartunov Table 1 + Table 2 cells
#   scripts/run_table.sh shibuya2023/fmnist seed=1,2,3 hydra/launcher=joblib
#   scripts/run_table.sh --dry-run ernoult2022                     # print the command only
#
# Arguments containing '=' are passed to train.py as overrides (seeds, launcher, device, ...).
# Sweep presets (those with hydra.sweeper params: search/, cost, sensitivity, investigation*) and
# the investigation's method snippets are skipped: run those with `python train.py -m experiment=<name>`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
dry=0; prefixes=(); overrides=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    *=*) overrides+=("$arg") ;;
    *) prefixes+=("${arg%/}") ;;
  esac
done
if [ ${#prefixes[@]} -eq 0 ]; then
  echo "usage: $0 [--dry-run] PREFIX... [override ...]   (PREFIX: a folder under conf/experiment)" >&2
  exit 2
fi
for prefix in "${prefixes[@]}"; do
  dir=conf/experiment/$prefix
  [ -d "$dir" ] || { echo "no preset folder $dir" >&2; exit 2; }
  names=$(find "$dir" -name '*.yaml' -not -path '*/method/*' | sort | while read -r f; do
            grep -q '^hydra:' "$f" || echo "${f#conf/experiment/}"; done | sed 's/\.yaml$//' | paste -sd, -)
  [ -n "$names" ] || { echo "no cell presets under $dir (only sweeps?)" >&2; continue; }
  cmd=("$PY" train.py -m "experiment=$names" ${overrides[@]+"${overrides[@]}"})
  echo "${cmd[*]}"
  [ $dry -eq 1 ] || "${cmd[@]}"
done
