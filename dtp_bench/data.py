"""The data path: official files → uint8 tensors on the run's device → normalised batches.

Each dataset is parsed once per process from its official release format (IDX for MNIST and
Fashion-MNIST, Python pickles for CIFAR and downsampled ImageNet) into uint8 image tensors of
shape (N, C, H, W) and int64 labels. They are moved to the run's device once; a batch is an index
slice of a random permutation, augmented as a batch and normalised on the device. There is no
per-sample Dataset and no worker process.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DatasetConfig


class DataError(RuntimeError):
    """Missing or unreadable data; the message names the file and how to get it."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    size: int  # images are size × size
    num_classes: int
    how_to_get: str
    train_size: int  # examples in the official training / test files (cost estimates; the loader counts)
    test_size: int


SPECS = {
    "mnist": DatasetSpec("mnist", 1, 28, 10, "torchvision.datasets.MNIST(root, download=True), "
                         "or the four IDX files from http://yann.lecun.com/exdb/mnist/", 60000, 10000),
    "fmnist": DatasetSpec("fmnist", 1, 28, 10, "`apt-get install dataset-fashion-mnist` (Debian), "
                          "torchvision.datasets.FashionMNIST(root, download=True), or the four IDX "
                          "files from https://github.com/zalandoresearch/fashion-mnist", 60000, 10000),
    "cifar10": DatasetSpec("cifar10", 3, 32, 10, "torchvision.datasets.CIFAR10(root, download=True), "
                           "or cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                           "unpacked into the root", 50000, 10000),
    "cifar100": DatasetSpec("cifar100", 3, 32, 100, "torchvision.datasets.CIFAR100(root, download=True), "
                            "or cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                            "unpacked into the root", 50000, 10000),
    "imagenet32": DatasetSpec("imagenet32", 3, 32, 1000, "the downsampled-ImageNet 32x32 release "
                              "(Imagenet32_train.zip and Imagenet32_val.zip from "
                              "https://image-net.org/download-images, registration needed), unpacked "
                              "by hand into <root>/imagenet32/ (train_data_batch_1..10, val_data)", 1281167, 50000),
}

FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# folders under the root searched for those files: torchvision's layout, then a flat folder
# named after the dataset (what the official zips unpack to, renamed)
IDX_FOLDERS = {"mnist": ("MNIST/raw", "mnist"), "fmnist": ("FashionMNIST/raw", "fashion-mnist", "fmnist")}


def default_root() -> Path:
    return Path(os.environ.get("DTP_BENCH_DATA", Path.home() / ".cache" / "dtp_bench")).expanduser()


# ---------------------------------------------------------------- safe pickles
class _ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it would run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Accepts only what the CIFAR / ImageNet32 pickles hold: containers and numpy arrays.

    A tampered data file cannot name any other global, so it cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays re-saved with pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes for Python 2 readers
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _ForbiddenGlobal(f"refusing to load global {module}.{name}")


def load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        raise DataError(f"{path}: not a plain data pickle ({exc}); the file may have been "
                        f"tampered with — replace it with the official release") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error, IndexError,
            AttributeError, KeyError) as exc:
        raise DataError(f"{path}: truncated or corrupt ({exc.__class__.__name__}: {exc}); "
                        f"delete it and fetch it again") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}; not an official file")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)
def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) of unsigned bytes, checking its declared size."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt ({exc}); delete it and fetch it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header declares {expected} bytes of data for shape {shape} but the "
                        f"file holds {len(raw) - header}; it is truncated or corrupt — fetch it again")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)


def _find_idx_folder(folders: list[Path]) -> Path | None:
    for folder in folders:
        if all(_idx_path(folder, stem) is not None for stem in IDX_FILES.values()):
            return folder
    return None


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dataset(folders: list[Path]) -> dict | None:
    folder = _find_idx_folder(folders)
    if folder is None:
        return None
    paths = {key: _idx_path(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{folder}: {split} images {images.shape} and labels {labels.shape} "
                            f"do not match")
    return {**{split: (arrays[f"{split}_images"][:, None], arrays[f"{split}_labels"]) for split in ("train", "test")},
            "files": sorted(str(p) for p in paths.values())}


# ---------------------------------------------------------------- pickled image batches
def _stack_batches(paths: list[Path], label_key: str, label_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in paths:
        batch = load_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path}: missing 'data' or '{label_key}'; not an official file")
        data = np.asarray(batch["data"], dtype=np.uint8)
        label = np.asarray(batch[label_key], dtype=np.int64) - label_offset
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(label):
            raise DataError(f"{path}: expected data of shape (N, 3072) and N labels, found "
                            f"{data.shape} and {label.shape}; truncated or corrupt")
        images.append(data.reshape(-1, 3, 32, 32))  # rows hold R, G, B planes of 32×32
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def _load_pickled(folder: Path, train: list[str], test: list[str], label_key: str,
                  label_offset: int = 0) -> dict | None:
    if not all((folder / name).is_file() for name in train + test):
        return None
    return {"train": _stack_batches([folder / n for n in train], label_key, label_offset),
            "test": _stack_batches([folder / n for n in test], label_key, label_offset),
            "files": [str(folder / n) for n in train + test]}


# ---------------------------------------------------------------- per-dataset readers
def _read(name: str, root: Path, system_fallback: bool = True) -> dict | None:
    """Return {'train': (images uint8 NCHW, labels), 'test': ..., 'files': [paths read]} or None
    when files are absent. ``system_fallback``: Fashion-MNIST may come from Debian's package folder
    (only when no dataset.root was given: a given root is the only place looked in)."""
    # MNIST and Fashion-MNIST files have the same names, so each is looked for only in folders
    # named after it: a flat root holding one of them must never be read as the other
    if name == "mnist":
        return _load_idx_dataset([root / folder for folder in IDX_FOLDERS["mnist"]])
    if name == "fmnist":
        system = [FMNIST_SYSTEM_DIR] if system_fallback else []
        return _load_idx_dataset([root / folder for folder in IDX_FOLDERS["fmnist"]] + system)
    if name == "cifar10":
        return _load_pickled(root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                             ["test_batch"], "labels")
    if name == "cifar100":
        return _load_pickled(root / "cifar-100-python", ["train"], ["test"], "fine_labels")
    if name == "imagenet32":
        for folder in (root / "imagenet32", root / "Imagenet32", root):
            found = _load_pickled(folder, [f"train_data_batch_{i}" for i in range(1, 11)],
                                  ["val_data"], "labels", label_offset=1)
            if found is not None:
                return found
        return None
    raise DataError(f"unknown dataset {name!r}")


def _expected_files(name: str, root: Path, system_fallback: bool = True) -> str:
    if name in ("mnist", "fmnist"):
        where = " or ".join(f"{root}/{folder}/" for folder in IDX_FOLDERS[name])
        if name == "fmnist" and system_fallback:
            where += f" or {FMNIST_SYSTEM_DIR}/"
        return f"{', '.join(IDX_FILES.values())} (.gz or unpacked) in {where}"
    if name == "cifar10":
        return f"{root}/cifar-10-batches-py/data_batch_1..5 and test_batch"
    if name == "cifar100":
        return f"{root}/cifar-100-python/train and test"
    return f"{root}/imagenet32/train_data_batch_1..10 and val_data"


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd  # only needed when files are missing

    cls = {"mnist": tvd.MNIST, "fmnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10,
           "cifar100": tvd.CIFAR100}.get(name)
    if cls is None:
        return
    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        cls(str(root), train=train, download=True)


@functools.lru_cache(maxsize=2)
def read_dataset(name: str, root: str, download: bool, system_fallback: bool = True) -> dict:
    """Parse a dataset once per process (a sweep in one process reuses it): {'train': (x, y),
    'test': (x, y), 'files': [the files read]}."""
    root_path = Path(root).expanduser()
    found = _read(name, root_path, system_fallback)
    if found is None and download and name != "imagenet32":
        try:
            _download(name, root_path)
        except Exception as exc:  # no network, a proxy, a full disk: say so and go on to the error
            download_error = f" (download failed: {exc.__class__.__name__}: {str(exc)[:120]})"
        else:
            download_error = ""
        found = _read(name, root_path, system_fallback)
    else:
        download_error = "" if download else " (dataset.download=false)"
    if found is None:
        raise DataError(f"dataset {name!r} not found: expected {_expected_files(name, root_path, system_fallback)}"
                        f"{download_error}. Get it with {SPECS[name].how_to_get}, or set dataset.root=... "
                        f"(or $DTP_BENCH_DATA) so that one of those paths exists.")
    spec = SPECS[name]
    files = found.pop("files")
    for split, (images, labels) in found.items():
        if images.shape[1:] != (spec.channels, spec.size, spec.size):
            raise DataError(f"{name} {split}: images have shape {images.shape[1:]}, expected "
                            f"{(spec.channels, spec.size, spec.size)}")
        if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
            raise DataError(f"{name} {split}: labels outside 0..{spec.num_classes - 1}; corrupt file")
    return {**{split: (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)))
               for split, (images, labels) in found.items()}, "files": files}


# ---------------------------------------------------------------- on-device data
def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def augment_batch(x: torch.Tensor, cfg, generator: torch.Generator) -> torch.Tensor:
    """Random crop with padding and flips on a uint8 batch (N, C, H, W), all on its device."""
    n, _, h, w = x.shape
    if cfg.crop_padding > 0:
        p = cfg.crop_padding
        mode = "constant" if cfg.padding_mode == "zero" else "replicate"
        padded = torch.nn.functional.pad(x.float() if mode == "replicate" else x, (p, p, p, p), mode=mode)
        padded = padded.to(x.dtype)
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device, generator=generator)
        rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
        cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    for flag, dim in ((cfg.hflip, 3), (cfg.vflip, 2)):
        if flag:
            flip = torch.rand(n, device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(dim), x)
    return x


class DeviceData:
    """A dataset held on one device, with batch iterators.

    ``train_batches`` draws a fresh permutation from ``generator`` (seeded by the run) so a run is
    reproducible and its position can be checkpointed.
    """

    def __init__(self, cfg: DatasetConfig, device: torch.device, dtype: torch.dtype,
                 val_size: int = 0, seed: int = 0):
        self.cfg = cfg
        self.spec = SPECS[cfg.name]
        self.device = device
        self.dtype = dtype
        root = str(Path(cfg.root).expanduser()) if cfg.root else str(default_root())
        # a given root is the only place looked in; the default one may fall back to a system copy
        splits = read_dataset(cfg.name, root, cfg.download, system_fallback=not cfg.root)
        self.files = splits["files"]  # recorded in summary.json: which copy of the data a run read
        train_x, train_y = splits["train"]
        test_x, test_y = splits["test"]
        if val_size >= len(train_y):
            raise DataError(f"trainer.val_size={val_size} leaves no training data "
                            f"({len(train_y)} training samples)")
        self.val_x = self.val_y = None
        if val_size > 0:
            # a fixed generator, not the run's seed: every run of a sweep validates on the same samples
            order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(12345))
            val_idx, train_idx = order[:val_size], order[val_size:]
            self.val_x, self.val_y = _to_device(train_x[val_idx], device), _to_device(train_y[val_idx], device)
            train_x, train_y = train_x[train_idx], train_y[train_idx]
        self.train_x, self.train_y = _to_device(train_x, device), _to_device(train_y, device)
        self.test_x, self.test_y = _to_device(test_x, device), _to_device(test_y, device)

        channels = self.spec.channels
        mean, std = list(cfg.mean), list(cfg.std)
        if len(mean) == 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels:
            raise DataError(f"dataset.mean/std have {len(mean)} values but {cfg.name} has "
                            f"{channels} channels")
        # x_normalised = x_uint8 * scale + shift, one fused op per batch
        self._scale = (1.0 / (255.0 * torch.tensor(std, dtype=dtype, device=device))).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(mean, dtype=dtype, device=device) /
                       torch.tensor(std, dtype=dtype, device=device)).view(1, -1, 1, 1)
        self.pca: torch.Tensor | None = None
        if cfg.pca_components:
            self._fit_pca(cfg.pca_components)

    # ------------------------------------------------------------ shapes
    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.pca is not None:
            return (self.pca.shape[1],)
        return (self.spec.channels, self.spec.size, self.spec.size)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    # ------------------------------------------------------------ batches
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self._shift, x.to(self.dtype), self._scale)
        if self.pca is not None:
            x = (x.flatten(1) - self._pca_mean) @ self.pca
        return x

    def _fit_pca(self, k: int) -> None:
        d = self.spec.channels * self.spec.size ** 2
        if k > d:
            raise DataError(f"dataset.pca_components={k} exceeds the input dimension {d}")
        # in float64 on the CPU (some devices, e.g. MPS, have no float64), once per run
        flat = torch.addcmul(self._shift.cpu().double(), self.train_x.cpu().double(),
                             self._scale.cpu().double()).flatten(1)
        mean = flat.mean(0, keepdim=True)
        # principal axes from the covariance's eigenvectors (d ≤ 3072 keeps this cheap)
        cov = (flat - mean).T @ (flat - mean) / (len(flat) - 1)
        _, vectors = torch.linalg.eigh(cov)
        self.pca = vectors[:, -k:].flip(1).to(self.device, self.dtype).contiguous()
        self._pca_mean = mean.to(self.device, self.dtype)

    def train_batches(self, batch_size: int, generator: torch.Generator, limit: int | None = None,
                      fixed: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches (``fixed``: the first ones, in order, every epoch, as overfit_batches wants)."""
        return self.train_batches_of_runs(batch_size, [generator], limit, fixed)

    def train_batches_of_runs(self, batch_size: int, generators: list[torch.Generator], limit: int | None = None,
                              fixed: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of K runs at once (batched runs, one generator each), run-major: run k's rows
        are the batch its own data order gives, cut with one gather for all runs."""
        runs = len(generators)
        orders = torch.stack([torch.arange(self.num_train, device=self.device) if fixed
                              else torch.randperm(self.num_train, device=self.device, generator=g)
                              for g in generators])
        n_batches = -(-self.num_train // batch_size)
        if limit is not None:
            n_batches = min(n_batches, limit)
        aug = self.cfg.augment
        augment = aug.crop_padding > 0 or aug.hflip or aug.vflip
        for i in range(n_batches):
            idx = orders[:, i * batch_size:(i + 1) * batch_size].reshape(-1)
            x = self.train_x[idx]
            if augment and runs == 1:
                x = augment_batch(x, aug, generators[0])
            elif augment:  # each run's crops and flips from its own generator
                x = torch.cat([augment_batch(part, aug, g) for part, g in zip(x.chunk(runs), generators)])
            yield self.normalise(x), self.train_y[idx]

    def eval_batches(self, split: str, batch_size: int,
                     limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        xs, ys = (self.test_x, self.test_y) if split == "test" else (self.val_x, self.val_y)
        n_batches = -(-len(ys) // batch_size)
        if limit is not None:
            n_batches = min(n_batches, limit)
        for i in range(n_batches):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            yield self.normalise(xs[sl]), ys[sl]

    def batches_per_epoch(self, batch_size: int, limit: int | None = None) -> int:
        n = -(-self.num_train // batch_size)
        return n if limit is None else min(n, limit)


BatchFactory = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
