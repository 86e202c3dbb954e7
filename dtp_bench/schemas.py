"""Import every config schema so Hydra's ConfigStore knows them (no torch imported)."""
from . import config  # noqa: F401
from .algorithms import schemas as _algorithm_schemas  # noqa: F401
from .nn import schemas as _arch_schemas  # noqa: F401
