"""scripts/make_presets.py reproduces conf/experiment/** exactly: the generated presets are the
files users run, so a hand edit that the generator does not know about (and that its next run
would silently undo) fails here."""
from __future__ import annotations

import importlib.util
import shutil

import pytest
from conftest import CONF, REPO
from omegaconf import OmegaConf


def load_generator():
    spec = importlib.util.spec_from_file_location("make_presets", REPO / "scripts" / "make_presets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """conf/experiment as the generator writes it now, into a temporary folder (its output folder
    moved there: the real presets are never touched)."""
    root = tmp_path_factory.mktemp("generated")
    module = load_generator()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(module, "ROOT", root)  # its closing message prints OUT relative to ROOT
        monkeypatch.setattr(module, "OUT", root / "conf" / "experiment")
        module.main()
    # everything it wrote is in the output folder
    assert {p.relative_to(root).parts[:2] for p in root.rglob("*") if p.is_file()} == {("conf", "experiment")}
    return root / "conf" / "experiment"


def differences(generated, committed) -> list[str]:
    """What differs between two preset trees, one line per file."""
    ours = {p.relative_to(generated).as_posix() for p in generated.rglob("*") if p.is_file()}
    theirs = {p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file()}
    lines = [f"{name}: in conf/experiment, not generated (hand-written?)" for name in sorted(theirs - ours)]
    lines += [f"{name}: generated, missing from conf/experiment" for name in sorted(ours - theirs)]
    lines += [f"{name}: differs (re-run `make presets`, or move the edit into the generator)"
              for name in sorted(ours & theirs)
              if (generated / name).read_bytes() != (committed / name).read_bytes()]
    return lines


def test_generator_reproduces_conf_experiment(generated):
    assert len(list(generated.rglob("*.yaml"))) > 100
    diff = differences(generated, CONF / "experiment")
    assert not diff, "\n".join(diff)


def test_a_hand_edit_is_noticed(generated, tmp_path):
    # the comparison itself can fail: a copy of the presets with one value edited by hand and one
    # file added by hand
    committed = tmp_path / "committed"
    shutil.copytree(CONF / "experiment", committed)
    before = set(differences(generated, committed))
    preset = committed / "bartunov2018" / "mnist_fc" / "bp.yaml"
    text = preset.read_text()
    assert "epochs: 500" in text
    preset.write_text(text.replace("epochs: 500", "epochs: 50", 1))
    (committed / "bartunov2018" / "extra.yaml").write_text("# @package _global_\n")
    assert set(differences(generated, committed)) - before == {
        "bartunov2018/extra.yaml: in conf/experiment, not generated (hand-written?)",
        "bartunov2018/mnist_fc/bp.yaml: differs (re-run `make presets`, or move the edit into the generator)"}


def test_a_search_result_reaches_its_ernoult_cell(tmp_path, monkeypatch):
    # the LeNet L-DRL MNIST/F-MNIST cells take their validation search's values through ERN_CHOSEN
    module = load_generator()
    monkeypatch.setattr(module, "OUT", tmp_path)
    monkeypatch.setattr(module, "ERN_CHOSEN", {"fmnist": {"algorithm.optimizer.lr": 0.0123, "algorithm.target_step": 0.234}})
    for col in ("fmnist", "mnist"):
        module.ern_cell("lenet", col, "l_drl")
        module.ern_cell("lenet", col, "l_drl", search=True)
    cell = OmegaConf.load(tmp_path / "ernoult2022" / "lenet_fmnist" / "l_drl.yaml")
    assert (cell.algorithm.optimizer.lr, cell.algorithm.target_step) == (0.0123, 0.234)
    assert "algorithm.optimizer.lr=0.0123" in cell.reference.note
    assert "algorithm" not in OmegaConf.load(tmp_path / "ernoult2022" / "lenet_mnist" / "l_drl.yaml")
    assert "algorithm" not in OmegaConf.load(tmp_path / "ernoult2022" / "search" / "lenet_fmnist" / "l_drl.yaml")
