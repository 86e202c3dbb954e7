"""Train one configuration: ``python train.py algorithm=dtp dataset=cifar10 arch=fc``.

Configuration lives in conf/ (see README); outputs go to the Hydra run directory.
"""
import hydra
from omegaconf import DictConfig

import dtp_bench.schemas  # noqa: F401  (registers the config schemas; light: no torch)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from dtp_bench.run import run  # heavy imports (torch) only once Hydra has composed the config

    return run(cfg)


if __name__ == "__main__":
    main()
