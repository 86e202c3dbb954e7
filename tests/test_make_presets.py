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
    assert module.main(["--out", str(root / "conf" / "experiment")]) == 0
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
    # the LeNet L-DRL MNIST/F-MNIST cells take their validation search's values through ERN_CHOSEN (read from scripts/chosen/ernoult2022.yaml)
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


def test_check_changes_nothing_and_fails_on_a_stale_preset(tmp_path):
    import subprocess
    import sys

    committed = tmp_path / "experiment"
    shutil.copytree(CONF / "experiment", committed)
    script = [sys.executable, str(REPO / "scripts" / "make_presets.py")]
    ok = subprocess.run(script + ["--check", "--out", str(committed)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout[-2000:]
    preset = committed / "shibuya2023" / "fmnist" / "bp.yaml"
    preset.write_text(preset.read_text().replace("lr: 0.0007502", "lr: 0.001"))
    before = {p: p.read_bytes() for p in committed.rglob("*.yaml")}
    stale = subprocess.run(script + ["--check", "--out", str(committed)], capture_output=True, text=True)
    assert stale.returncode == 1 and stale.stdout.splitlines() == ["shibuya2023/fmnist/bp.yaml: differs"]
    assert {p: p.read_bytes() for p in committed.rglob("*.yaml")} == before  # nothing written
    usage = subprocess.run(script + ["--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--check" in usage.stdout and not list((tmp_path / "conf").glob("*"))


def test_chosen_values_come_from_the_yaml_files(tmp_path):
    module = load_generator()
    chosen = OmegaConf.load(REPO / "scripts" / "chosen" / "shibuya2023.yaml")
    assert module.FW_CHOSEN["fmnist"]["bp"] == dict(chosen.cells.fmnist.bp["values"])
    assert module.FW_CHOSEN_BUDGET_OF[("fmnist", "bp")] == chosen.cells.fmnist.bp.budget
    cell = OmegaConf.load(CONF / "experiment" / "shibuya2023" / "fmnist" / "bp.yaml")
    assert cell.algorithm.optimizer.lr == chosen.cells.fmnist.bp["values"]["algorithm.optimizer.lr"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("cells: {fmnist: {bp: {lr: 0.1}}}\n")
    with pytest.raises(SystemExit, match="needs a `values:` mapping"):
        module.load_chosen(bad)
