"""The CIFAR-10 reader, on tiny synthetic batches in the python-version format (no download)."""

import os
import pickle

import numpy as np
import pytest
import torch

from kdlib.data.cifar import CIFAR10_ENV, find_cifar10, load_cifar10
from kdlib.data.digits import digit_images

_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write_batches(folder, n=4, seed=0):
    """Six batches of ``n`` images each, pickled like the originals (protocol 2, bytes keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in _NAMES:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        written[name] = (data, labels)
    return written


def test_load_cifar10_concatenates_batches_as_images(tmp_path):
    written = _write_batches(tmp_path / "cifar-10-batches-py")
    x_train, y_train, x_test, y_test = load_cifar10(tmp_path)  # a parent folder works too
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    first, labels = written["data_batch_1"]
    np.testing.assert_array_equal(x_train[0, 0].ravel(), first[0, :1024])  # red plane first
    np.testing.assert_array_equal(x_train[0, 2].ravel(), first[0, 2048:])
    assert y_train[:4].tolist() == labels and y_test.tolist() == written["test_batch"][1]


def test_location_from_environment_and_clear_errors(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    _write_batches(folder)
    monkeypatch.setenv(CIFAR10_ENV, str(folder))
    assert find_cifar10() == folder
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="torchvision"):
        find_cifar10()
    with pytest.raises(TypeError, match="path"):
        find_cifar10(3)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    _write_batches(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo unpickled > " + str(tmp_path / "ran"),))

    with open(tmp_path / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": []}, handle, protocol=2)
    with pytest.raises(ValueError, match="refusing to load"):
        load_cifar10(tmp_path)
    assert not (tmp_path / "ran").exists()


def test_malformed_batches_are_clear_errors(tmp_path):
    _write_batches(tmp_path)
    with open(tmp_path / "data_batch_2", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(tmp_path)
    with open(tmp_path / "data_batch_2", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, handle)
    with pytest.raises(ValueError, match="0..9"):
        load_cifar10(tmp_path)


def test_digit_images_are_a_seeded_stratified_split():
    x_train, y_train, x_test, y_test = digit_images(n_train=500, seed=3)
    assert x_train.shape[1:] == (1, 8, 8) and x_train.shape[0] + x_test.shape[0] == 1797
    assert abs(x_train.shape[0] - 500) <= 10 and 0 <= x_train.min() and x_train.max() <= 1
    counts = torch.bincount(y_train, minlength=10).float()
    assert counts.min() >= 0.9 * counts.mean()
    again = digit_images(n_train=500, seed=3)
    assert torch.equal(again[0], x_train) and not torch.equal(digit_images(500, seed=4)[1], y_train)
    with pytest.raises(ValueError, match="n_train"):
        digit_images(n_train=5)
