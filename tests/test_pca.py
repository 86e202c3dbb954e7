"""PCA inputs (dataset.pca_components): the projection fitted by DeviceData on the training split,
checked against a float64 NumPy eigen-decomposition of the same normalised data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import N_TEST, N_TRAIN, run_config, tiny_overrides

from dtp_bench.config import ConfigError, DatasetConfig
from dtp_bench.data import DataError, DeviceData
from dtp_bench.trainer import SUMMARY

MEAN, STD = 0.13, 0.31
K = 12


def _pca_data(root, k=K, val_size=0) -> DeviceData:
    cfg = DatasetConfig(name="mnist", root=str(root), download=False, mean=[MEAN], std=[STD], pca_components=k)
    return DeviceData(cfg, torch.device("cpu"), torch.float32, val_size=val_size)


def _normalised(images: torch.Tensor) -> np.ndarray:
    """uint8 images → flattened, normalised float64 rows, in NumPy (independent of the data path)."""
    return (images.numpy().reshape(len(images), -1).astype(np.float64) / 255 - MEAN) / STD


def _top_eigenvalues(rows: np.ndarray, k: int) -> np.ndarray:
    centred = rows - rows.mean(0)
    cov = centred.T @ centred / (len(rows) - 1)
    return np.linalg.eigvalsh(cov)[::-1][:k]


def test_pca_axes_are_orthonormal_and_decorrelate_the_training_data(data_root):
    data = _pca_data(data_root)
    assert data.input_shape == (K,)
    assert data.pca.shape == (784, K) and data.pca.dtype == torch.float32
    axes = data.pca.double()
    torch.testing.assert_close(axes.T @ axes, torch.eye(K, dtype=torch.float64), rtol=0, atol=1e-5)

    z = data.normalise(data.train_x).double().numpy()
    assert z.shape == (N_TRAIN, K)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)  # centred on the training mean
    cov = np.cov(z, rowvar=False)
    variances = np.diag(cov)
    expected = _top_eigenvalues(_normalised(data.train_x), K)
    assert np.all(np.diff(expected) < 0)  # distinct: the axes are defined up to sign
    # the projected variances are the top-K eigenvalues of the training covariance, largest first
    np.testing.assert_allclose(variances, expected, rtol=1e-4)
    off_diagonal = cov - np.diag(variances)
    assert np.abs(off_diagonal).max() < 1e-4 * variances[0]


def test_batches_have_the_projected_shape(data_root):
    data = _pca_data(data_root)
    batches = list(data.train_batches(16, torch.Generator().manual_seed(0)))
    assert [tuple(x.shape) for x, _ in batches] == [(16, K)] * (N_TRAIN // 16)
    x, _ = next(data.eval_batches("test", 1000))
    assert x.shape == (N_TEST, K)


def test_test_and_validation_splits_use_the_training_fit(data_root):
    # fitted on the training split only (validation samples held out of it), and every split
    # projected with the training mean and axes: no statistic of a held-out split leaks in
    data = _pca_data(data_root, val_size=16)
    assert data.num_train == N_TRAIN - 16
    train = _normalised(data.train_x)
    np.testing.assert_allclose(np.var(data.normalise(data.train_x).double().numpy(), axis=0, ddof=1),
                               _top_eigenvalues(train, K), rtol=1e-4)
    axes, train_mean = data.pca.double().numpy(), train.mean(0)
    for split, images in (("test", data.test_x), ("val", data.val_x)):
        x, _ = next(data.eval_batches(split, 1000))
        expected = (_normalised(images) - train_mean) @ axes
        np.testing.assert_allclose(x.double().numpy(), expected, rtol=0, atol=1e-4)
        # the split's own mean is not subtracted: its projection is not centred
        assert np.abs(x.double().numpy().mean(0)).max() > 1e-2


def test_more_components_than_input_dimensions_is_an_error(data_root):
    with pytest.raises(DataError, match="pca_components=785 exceeds the input dimension 784"):
        _pca_data(data_root, k=785)
    data = _pca_data(data_root, k=784)  # all of them: a rotation of the centred inputs
    assert data.input_shape == (784,)
    with pytest.raises(ConfigError, match="pca_components"):
        DatasetConfig(name="mnist", pca_components=0).validate()


def test_a_run_trains_on_pca_inputs(data_root, tmp_path):
    run_config(tiny_overrides(data_root, dataset="mnist", epochs=1) + [f"dataset.pca_components={K}"], tmp_path)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["status"] == "completed"
    assert summary["parameters"]["forward"] == (K * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
