"""Optuna sweeper that resumes (a Hydra plugin: Hydra loads sweepers from the hydra_plugins
namespace only). With a persistent storage (the search presets put an sqlite file in the sweep
dir), a rerun of the same command loads the study, runs only the trials still missing from
``n_trials`` and numbers the new trial folders after the existing ones (the plugin as released
would run ``n_trials`` more and start again at folder 0, over the first trials' results)."""
from __future__ import annotations

import sys

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        if impl.storage:
            import optuna

            try:
                study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
            except KeyError:  # no such study yet: a fresh search
                study = None
            if study is not None and study.trials:
                finished = sum(t.state.is_finished() for t in study.trials)
                # a trial left RUNNING by a killed process counts as started, not finished: rerun it
                impl.job_idx = len(study.trials)
                remaining = max(0, impl.n_trials - finished)
                print(f"search: resuming study '{impl.study_name}' ({finished} of {impl.n_trials} trials "
                      f"finished); running {remaining} more from trial folder {impl.job_idx}", file=sys.stderr)
                impl.n_trials = remaining
        return super().sweep(arguments)
