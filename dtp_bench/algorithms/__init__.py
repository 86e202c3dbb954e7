"""Learning algorithms. Each module registers its class with ``register_algorithm``."""
from __future__ import annotations

import importlib

# one module per algorithm; a module may register several names (tp, dtp, sdtp, ao_sdtp)
MODULES = ("bp", "target_prop", "drl", "fa", "dfa", "scaling_dtp")


def load_all() -> None:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
