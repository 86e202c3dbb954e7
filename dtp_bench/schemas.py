"""Import every config schema so Hydra's ConfigStore knows them, and our resolvers (no torch)."""
from . import (
    config,  # noqa: F401
    menu,  # noqa: F401  (resolvers for --help and folder names)
)
from .algorithms import schemas as _algorithm_schemas  # noqa: F401
from .nn import schemas as _arch_schemas  # noqa: F401
