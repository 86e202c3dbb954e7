"""Shared helpers: tiny datasets written in the official formats, and config composition.

Runner tests never touch real data: session fixtures write ~64 train / 32 test samples of each
dataset into a temporary folder, in the layout and file format of the official release, and the
tests point ``dataset.root`` there.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
N_TRAIN, N_TEST = 64, 32

import dtp_bench.schemas  # noqa: E402,F401  (registers the config schemas)


# ---------------------------------------------------------------- writers of official formats
def fake_images(n: int, shape: tuple[int, ...], labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 images whose mean brightness depends on the label, so a net can learn something."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 96, size=(n, *shape))
    return (base + (labels.reshape(-1, *[1] * len(shape)) % 10) * 16).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX file of unsigned bytes (gzipped when ``path`` ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_idx_dataset(folder: Path, gz: bool = True, n_train: int = N_TRAIN,
                      n_test: int = N_TEST, seed: int = 0) -> dict:
    """The four MNIST / Fashion-MNIST IDX files; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        labels = (np.arange(n) * 7 + seed) % 10
        images = fake_images(n, (28, 28), labels, seed + n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels.astype(np.uint8))
        out[split] = (images, labels)
    return out


def _pickle_dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # as the Python-2 era releases


def _rows(n: int, labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, 3072) uint8 rows: the R, G and B planes of a 32×32 image one after another."""
    return fake_images(n, (3, 32, 32), labels, seed).reshape(n, 3072)


def write_cifar10(root: Path, n_test: int = N_TEST) -> dict:
    """cifar-10-batches-py/data_batch_1..5 and test_batch: dicts with bytes keys, list labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [13, 13, 13, 13, 12]  # 64 training images over the five batches
    out = {"train": ([], []), "test": None}
    for i, n in enumerate(sizes, start=1):
        labels = (np.arange(n) + i) % 10
        data = _rows(n, labels, i)
        _pickle_dump(folder / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels.tolist(),
            b"data": data, b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]})
        out["train"][0].append(data)
        out["train"][1].append(labels)
    labels = np.arange(n_test) % 10
    data = _rows(n_test, labels, 99)
    _pickle_dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1",
                                         b"labels": labels.tolist(), b"data": data,
                                         b"filenames": [b"t.png"] * n_test})
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2))
    out["train"] = (np.concatenate(out["train"][0]), np.concatenate(out["train"][1]))
    out["test"] = (data, labels)
    return out


def write_cifar100(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> dict:
    """cifar-100-python/train and test, with fine (0..99) and coarse (0..19) labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = (np.arange(n) * 37 + 5) % 100
        coarse = fine % 20
        data = _rows(n, fine, n)
        _pickle_dump(folder / split, {b"filenames": [b"f.png"] * n, b"batch_label": split.encode(),
                                      b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(),
                                      b"data": data})
        out[split] = (data, fine)
    return out


def write_imagenet32(folder: Path, per_batch: int = 8, n_val: int = N_TEST) -> dict:
    """train_data_batch_1..10 and val_data: 'data' (N, 3072) uint8, 'labels' 1..1000 (1-based)."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 11):
        labels = (np.arange(per_batch) * 101 + i) % 1000 + 1
        data = _rows(per_batch, labels, i)
        _pickle_dump(folder / f"train_data_batch_{i}", {"data": data, "labels": labels.tolist(),
                                                         "mean": data.mean(0)})
        train_x.append(data)
        train_y.append(labels - 1)
    labels = np.arange(n_val) * 31 % 1000 + 1
    data = _rows(n_val, labels, 0)
    _pickle_dump(folder / "val_data", {"data": data, "labels": labels.tolist()})
    return {"train": (np.concatenate(train_x), np.concatenate(train_y)), "test": (data, labels - 1)}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One folder holding tiny copies of every dataset, in torchvision's / the releases' layouts."""
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", gz=True, seed=1)
    write_idx_dataset(root / "FashionMNIST" / "raw", gz=True, seed=2)
    write_cifar10(root)
    write_cifar100(root)
    write_imagenet32(root / "imagenet32")
    return root


# ---------------------------------------------------------------- configs
def compose(overrides: list[str] = (), return_hydra_config: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def tiny_overrides(root: Path, dataset: str = "fmnist", epochs: int = 2, algorithm: str = "bp") -> list[str]:
    """A small, fast CPU run on the fake data."""
    return [f"algorithm={algorithm}", f"dataset={dataset}", f"dataset.root={root}", "dataset.download=false",
            "trainer.device=cpu", "trainer.progress=off", f"trainer.epochs={epochs}",
            "trainer.batch_size=16", "trainer.eval_batch_size=16", "arch=fc", "arch.hidden=[32,32]"]


def run_config(overrides: list[str], run_dir: Path) -> float:
    """Compose and run in this process (no Hydra run directory: outputs go to ``run_dir``)."""
    from dtp_bench.run import run

    return run(compose(overrides), run_dir=run_dir)


TIMING_FIELDS = ("epoch_seconds", "examples_per_second")


def read_metrics(run_dir: Path, drop_timing: bool = True) -> list[dict]:
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if drop_timing:
        rows = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]
    return rows


def train_py(args: list[str], cwd: Path, env: dict | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in a fresh process, as a user would type it."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("DTP_BENCH_DATA", None)
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def fmnist_subset() -> tuple:
    """2048 real Fashion-MNIST training images, flattened and normalised, for "learns on a small
    real problem" tests. Skips when the data is absent, except under CI=true, where it fails."""
    from dtp_bench.data import DataError, default_root, read_dataset

    try:
        splits = read_dataset("fmnist", str(default_root()), False)
    except DataError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("Fashion-MNIST not available")
    x, y = splits["train"]
    x = (x[:2048].float() / 255 - 0.286) / 0.353
    return x.flatten(1), y[:2048]


def loss_before_after(algorithm, network, x, y, steps: int, batch_size: int = 64) -> tuple[float, float]:
    """Full-data training loss before and after ``steps`` random minibatch steps of ``algorithm``."""
    import torch

    def loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(network(x), y).item()

    start = loss()
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch_size,), generator=generator)
        algorithm.train_step(x[idx], y[idx])
    return start, loss()
