"""Every algorithm, at its own YAML defaults, learns in its hidden layers on real data.

The control is the same run (same initial weights, batches and noise) with every hidden block frozen
(trainer.frozen_blocks' mechanism), so only the output block learns: a method whose hidden layers
are starved ends where its control does. Two scales:

- realdata (default suite): 200 steps of 64 on 2048 Fashion-MNIST images, the default FC net;
- slow (`make test-slow`): train.py at the defaults for 5 epochs on the whole of Fashion-MNIST, against
  the run with `trainer.frozen_blocks=[0,1,2,3,4]`, at least 1.5 points of test error apart.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import compose, run_config
from test_target_prop import loss_against_frozen

from dtp_bench.algorithms.base import build_algorithm
from dtp_bench.config import validate
from dtp_bench.nn.blocks import build_network

ALGORITHMS = ["bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fw_dtp", "drl", "scaling_dtp"]
# what the full-scale check measured (5 epochs, F-MNIST, results in the issue-17 note): this default
# does not beat its control yet, and the test says so instead of hiding it
# (sdtp was here until its default took five inverse updates per batch: 15.2 % vs 22.4 % frozen)
KNOWN_STARVED_AT_SCALE: dict = {}


def _known(names: dict) -> list:
    return [pytest.param(n, marks=pytest.mark.xfail(reason=names[n], strict=True)) if n in names else n
            for n in ALGORITHMS]


# measured at this scale: ao_sdtp 1.224 vs 1.167 (its hidden layers first cost, then pay: it beats its
# control by 5 points after 5 epochs, the slow test)
SUBSET_KNOWN = {"ao_sdtp": "200 steps are too few for AO-SDTP's hidden layers to pay off (the slow test passes)"}


@pytest.mark.realdata
@pytest.mark.parametrize("name", _known(SUBSET_KNOWN))
def test_defaults_beat_their_frozen_hidden_control(name, fmnist_subset):
    x, y = fmnist_subset
    cfg = validate(compose([f"algorithm={name}"]))
    torch.manual_seed(0)
    net = build_network(cfg.arch, (784,), 10)
    algo = build_algorithm(cfg.algorithm, net, 1)
    hidden = list(range(len(net) - 1))
    generator = torch.Generator().manual_seed(1)

    def batches():  # the feedback-only epochs the defaults ask for before training (drl: 6), on the subset
        order = torch.randperm(len(y), generator=generator)
        return ((x[i], y[i]) for i in order.split(64))

    algo.before_epoch(0, batches)
    start, end, frozen_end = loss_against_frozen(algo, x, y, steps=200, frozen_blocks=hidden)
    assert end < frozen_end - 0.05, (name, start, end, frozen_end)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", _known(KNOWN_STARVED_AT_SCALE))
def test_defaults_beat_their_frozen_control_after_five_epochs(name, tmp_path):
    errors = []
    for frozen in ("[]", "[0,1,2,3,4]"):
        out = tmp_path / f"frozen{len(frozen)}"
        run_config([f"algorithm={name}", "dataset=fmnist", "dataset.download=false", "trainer.epochs=5",
                    f"trainer.frozen_blocks={frozen}", "trainer.checkpoint=false", "trainer.progress=off",
                    "trainer.device=cpu"], out)
        errors.append(json.loads((out / "summary.json").read_text())["final_test_error"])
    assert errors[0] < errors[1] - 1.5, errors
