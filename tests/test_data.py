"""Readers of the official dataset formats, their error messages, and the on-device batches."""
from __future__ import annotations

import gzip
import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import N_TEST, N_TRAIN, write_cifar10, write_cifar100, write_idx, write_idx_dataset, write_imagenet32

from dtp_bench import data as data_module
from dtp_bench.config import AugmentConfig, DatasetConfig
from dtp_bench.data import DataError, DeviceData, augment_batch, load_pickle, read_dataset


def _check_split(got, expected, channels: int) -> None:
    images, labels = got
    want_x, want_y = expected
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (len(want_y), channels, *([28, 28] if channels == 1 else [32, 32]))
    assert torch.equal(labels, torch.as_tensor(np.asarray(want_y), dtype=torch.int64))
    assert torch.equal(images.flatten(1), torch.from_numpy(np.asarray(want_x).reshape(len(want_y), -1)))


# ---------------------------------------------------------------- MNIST / Fashion-MNIST IDX
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("name,subdir", [
    ("mnist", "MNIST/raw"),  # torchvision's layout
    ("fmnist", "FashionMNIST/raw"),
    ("mnist", "mnist"),  # a flat folder named after the dataset
    ("fmnist", "fmnist"),
    ("fmnist", "fashion-mnist"),  # Debian's package name
])
def test_idx_layouts(tmp_path, name, subdir, gz):
    written = write_idx_dataset(tmp_path / subdir, gz=gz)
    splits = read_dataset(name, str(tmp_path), False)
    for split in ("train", "test"):
        _check_split(splits[split], written[split], channels=1)


def _idx_stem(name: str, gz: bool) -> str:
    return name + (".gz" if gz else "")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated_idx_is_named(tmp_path, gz):
    folder = tmp_path / "mnist"
    write_idx_dataset(folder, gz=gz)
    path = folder / _idx_stem("train-images-idx3-ubyte", gz)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as err:
        read_dataset("mnist", str(tmp_path), False)
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)


def test_idx_bad_magic_and_wrong_count(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_dataset(folder, gz=False)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*magic"):
        read_dataset("mnist", str(tmp_path), False)
    # images and labels of different lengths
    other_root = tmp_path / "other"
    other = other_root / "mnist"
    write_idx_dataset(other, gz=False)
    write_idx(other / "t10k-labels-idx1-ubyte", np.zeros(N_TEST + 3, np.uint8))
    with pytest.raises(DataError, match="do not match"):
        read_dataset("mnist", str(other_root), False)


def test_idx_labels_out_of_range(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_dataset(folder, gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(N_TEST, 10, np.uint8))
    with pytest.raises(DataError, match="labels outside 0..9"):
        read_dataset("mnist", str(tmp_path), False)


def test_mnist_and_fmnist_never_read_each_other(tmp_path, monkeypatch):
    # both releases use the same four file names: a flat root or the other's folder must not match
    monkeypatch.setattr(data_module, "FMNIST_SYSTEM_DIR", tmp_path / "no_system_copy")
    write_idx_dataset(tmp_path, gz=True)
    write_idx_dataset(tmp_path / "mnist", gz=True)
    with pytest.raises(DataError, match="FashionMNIST/raw"):
        read_dataset("fmnist", str(tmp_path), False)
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", gz=True)
    write_idx_dataset(tmp_path / "fashion-mnist", gz=True)
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="MNIST/raw"):
        read_dataset("mnist", str(tmp_path), False)


def test_missing_files_message(tmp_path):
    with pytest.raises(DataError) as err:
        read_dataset("mnist", str(tmp_path), False)
    message = str(err.value)
    for part in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(tmp_path),
                 "MNIST/raw", "download=True", "dataset.root"):
        assert part in message, part
    with pytest.raises(DataError) as err:
        read_dataset("cifar100", str(tmp_path), False)
    assert "cifar-100-python" in str(err.value) and "cifar.html" in str(err.value)
    with pytest.raises(DataError) as err:
        read_dataset("imagenet32", str(tmp_path), True)  # never downloaded, whatever download says
    assert "train_data_batch_1..10" in str(err.value) and "val_data" in str(err.value)


# ---------------------------------------------------------------- pickled releases
def test_cifar10(tmp_path):
    written = write_cifar10(tmp_path)
    splits = read_dataset("cifar10", str(tmp_path), False)
    for split in ("train", "test"):
        _check_split(splits[split], written[split], channels=3)
    # rows hold the red, green and blue planes one after another
    images, _ = splits["test"]
    row = written["test"][0][3]
    assert torch.equal(images[3, 1].flatten(), torch.from_numpy(row[1024:2048]))


def test_cifar100_uses_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    splits = read_dataset("cifar100", str(tmp_path), False)
    for split in ("train", "test"):
        _check_split(splits[split], written[split], channels=3)
    assert int(splits["train"][1].max()) >= 20  # fine labels (0..99), not coarse (0..19)


@pytest.mark.parametrize("subdir", ["imagenet32", ""])
def test_imagenet32_labels_are_zero_based(tmp_path, subdir):
    written = write_imagenet32(tmp_path / subdir)
    splits = read_dataset("imagenet32", str(tmp_path), False)
    assert len(splits["train"][1]) == 80 and len(splits["test"][1]) == N_TEST
    for split in ("train", "test"):
        _check_split(splits[split], written[split], channels=3)
    assert int(splits["train"][1].min()) >= 0 and int(splits["train"][1].max()) <= 999


@pytest.mark.parametrize("name,writer,relpath", [
    ("cifar10", write_cifar10, "cifar-10-batches-py/test_batch"),
    ("cifar100", write_cifar100, "cifar-100-python/train"),
    ("imagenet32", lambda root: write_imagenet32(root / "imagenet32"), "imagenet32/train_data_batch_7"),
])
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.98])
def test_truncated_pickle_is_named(tmp_path, name, writer, relpath, keep):
    writer(tmp_path)
    path = tmp_path / relpath
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(DataError, match=f"{relpath}.*truncated or corrupt"):
        read_dataset(name, str(tmp_path), False)


class _RunsCode:
    """What a tampered data file could hold: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match="data_batch_3.*refusing to load global .*system"):
        read_dataset("cifar10", str(tmp_path), False)
    assert not marker.exists()
    # the same file, loaded directly
    with pytest.raises(DataError, match="tampered"):
        load_pickle(path)
    assert not marker.exists()


def test_pickle_not_a_dict(tmp_path):
    path = tmp_path / "val_data"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DataError, match="expected a dict"):
        load_pickle(path)


def test_pickle_with_wrong_shape(tmp_path):
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"fine_labels": [0] * 4}, f, protocol=2)
    with pytest.raises(DataError, match="cifar-100-python/test.*3072"):
        read_dataset("cifar100", str(tmp_path), False)


# ---------------------------------------------------------------- on-device data
def _device_data(root, name="mnist", val_size=0, **kw):
    cfg = DatasetConfig(name=name, root=str(root), download=False, **kw)
    return DeviceData(cfg, torch.device("cpu"), torch.float32, val_size=val_size)


def test_device_data_keeps_uint8_and_normalises(data_root):
    data = _device_data(data_root, mean=[0.5], std=[0.25])
    assert data.train_x.dtype == torch.uint8 and data.num_train == N_TRAIN
    gen = torch.Generator().manual_seed(0)
    seen = []
    for x, y in data.train_batches(10, gen):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        seen.append(y)
    assert sum(len(y) for y in seen) == N_TRAIN
    x, _ = next(data.eval_batches("test", 1000))
    expected = (data.test_x.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)
    assert len(list(data.train_batches(10, gen, limit=3))) == 3


def test_train_batches_are_a_permutation(data_root):
    data = _device_data(data_root)
    gen = torch.Generator().manual_seed(0)
    # identify each sample by its pixels: every training image comes exactly once per epoch
    keys = sorted(x.flatten(1).sum(1).tolist()[i] for x, _ in data.train_batches(7, gen)
                  for i in range(len(x)))
    normalised = data.normalise(data.train_x).flatten(1).sum(1)
    assert keys == pytest.approx(sorted(normalised.tolist()), rel=1e-5)


def test_validation_split(data_root):
    data = _device_data(data_root, val_size=16)
    assert data.num_train == N_TRAIN - 16 and len(data.val_y) == 16
    with pytest.raises(DataError, match="val_size"):
        _device_data(data_root, val_size=N_TRAIN)


def test_augmentation_keeps_shape_and_dtype(data_root):
    data = _device_data(data_root, name="cifar10", mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2],
                        augment=AugmentConfig(crop_padding=4, hflip=True))
    x = data.train_x[:8]
    out = augment_batch(x, data.cfg.augment, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    batches = list(data.train_batches(16, torch.Generator().manual_seed(0)))
    assert batches[0][0].shape == (16, 3, 32, 32)


def _distinct_images(n: int = 64, channels: int = 2, h: int = 6, w: int = 7, seed: int = 0) -> torch.Tensor:
    """uint8 images with no zero pixel (zero padding shows) and no symmetry (flips show)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, channels, h, w), generator=g, dtype=torch.uint8)


def _window_offsets(out: torch.Tensor, x: torch.Tensor, p: int, np_mode: str) -> list[tuple[int, int]]:
    """For each output image, the offset (dy, dx) of the (h, w) window of the input padded by ``p``
    (numpy's padding, an independent reference) that it equals; fails when there is none."""
    h, w = x.shape[2:]
    pad = ((0, 0), (0, 0), (p, p), (p, p))
    padded = np.pad(x.numpy(), pad, mode="constant", constant_values=0) if np_mode == "constant" \
        else np.pad(x.numpy(), pad, mode=np_mode)
    offsets = []
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 if np.array_equal(padded[i, :, dy:dy + h, dx:dx + w], out[i].numpy())]
        assert found, f"sample {i} is no {h}x{w} window of its padded image"
        offsets.append(found[0])
    return offsets


@pytest.mark.parametrize("padding_mode,np_mode", [("zero", "constant"), ("edge", "edge")])
def test_random_crop_is_a_window_of_the_padded_image(padding_mode, np_mode):
    x = _distinct_images()
    p = 2
    cfg = AugmentConfig(crop_padding=p, padding_mode=padding_mode)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    offsets = _window_offsets(out, x, p, np_mode)
    # shifted windows occur, in both directions and along both axes (25 offsets, 64 samples)
    assert len(set(offsets)) > 10
    assert {dy for dy, _ in offsets} == set(range(2 * p + 1)) and {dx for _, dx in offsets} == set(range(2 * p + 1))
    shifted = [i for i, o in enumerate(offsets) if o != (p, p)]
    if padding_mode == "zero":  # a window reaching into the border holds padding zeros
        assert all((out[i] == 0).any() for i in shifted)
    else:  # edge padding repeats border pixels: never a zero (the images have none)
        assert not (out == 0).any()
    # the same generator state gives the same crops; another one, other crops
    assert torch.equal(out, augment_batch(x, cfg, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment_batch(x, cfg, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("hflip,vflip", [(True, False), (False, True), (True, True)])
def test_flips(hflip, vflip):
    x = _distinct_images()
    out = augment_batch(x, AugmentConfig(hflip=hflip, vflip=vflip), torch.Generator().manual_seed(0))
    candidates = {"none": x, "h": x.flip(3), "v": x.flip(2), "hv": x.flip(2).flip(3)}
    allowed = {"none"} | ({"h"} if hflip else set()) | ({"v"} if vflip else set()) | ({"hv"} if hflip and vflip else set())
    outcomes = []
    for i in range(len(x)):
        match = [name for name, c in candidates.items() if torch.equal(out[i], c[i])]
        assert len(match) == 1 and match[0] in allowed, (i, match)
        outcomes.append(match[0])
    assert set(outcomes) == allowed  # every outcome occurs (each flip has probability 1/2)


def test_crop_and_flip_together():
    x = _distinct_images()
    p = 1
    out = augment_batch(x, AugmentConfig(crop_padding=p, hflip=True), torch.Generator().manual_seed(0))
    # undoing the flip of the flipped samples leaves windows of the zero-padded input
    plain, flipped = [], []
    for i in range(len(x)):
        try:
            _window_offsets(out[i:i + 1], x[i:i + 1], p, "constant")
            plain.append(i)
        except AssertionError:
            _window_offsets(out[i:i + 1].flip(3), x[i:i + 1], p, "constant")
            flipped.append(i)
    assert plain and flipped


def test_train_batches_are_augmented_and_test_batches_are_not(data_root):
    data = _device_data(data_root, name="cifar10", mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2],
                        augment=AugmentConfig(hflip=True))
    originals = data.normalise(data.train_x).flatten(1)
    mirrored = data.normalise(data.train_x.flip(3)).flatten(1)
    flips = []
    for x, y in data.train_batches(16, torch.Generator().manual_seed(0)):
        for row, label in zip(x.flatten(1), y):
            same = (originals - row).abs().amax(1) == 0
            flipped = (mirrored - row).abs().amax(1) == 0
            assert same.any() != flipped.any()  # exactly one of the two
            j = int((same | flipped).nonzero()[0])
            assert data.train_y[j] == label
            flips.append(bool(flipped.any()))
    assert len(flips) == N_TRAIN and 0 < sum(flips) < N_TRAIN
    x, _ = next(data.eval_batches("test", 1000))
    assert torch.equal(x, data.normalise(data.test_x))


def test_corrupt_gzip_stream(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_dataset(folder, gz=True)
    path = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[12:60] = bytes(b ^ 0x5A for b in raw[12:60])  # scramble the deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*corrupt"):
        read_dataset("mnist", str(tmp_path), False)


def test_gzip_of_garbage(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_dataset(folder, gz=True)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"")[:5])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        read_dataset("mnist", str(tmp_path), False)


def test_a_given_root_is_the_only_place_fmnist_is_looked_for(tmp_path, monkeypatch):
    import dtp_bench.data as data_module

    system = tmp_path / "system"
    written = write_idx_dataset(system, gz=True)
    monkeypatch.setattr(data_module, "FMNIST_SYSTEM_DIR", system)
    read_dataset.cache_clear()
    (tmp_path / "given" / "fashion-mnist").mkdir(parents=True)  # a partial root: nothing in it
    with pytest.raises(DataError) as err:
        read_dataset("fmnist", str(tmp_path / "given"), False, system_fallback=False)
    assert str(system) not in str(err.value)
    # without a given root, the system copy is read, and the files read are named
    splits = read_dataset("fmnist", str(tmp_path / "default"), False, system_fallback=True)
    _check_split(splits["train"], written["train"], channels=1)
    assert splits["files"] and all(f.startswith(str(system)) for f in splits["files"])
    read_dataset.cache_clear()


def test_summary_names_the_data_files_read(data_root, tmp_path):
    from conftest import run_config, tiny_overrides

    run_config(tiny_overrides(data_root, epochs=1), tmp_path)
    files = json.loads((tmp_path / "summary.json").read_text())["data_files"]
    assert len(files) == 4 and all("FashionMNIST/raw" in f for f in files)
