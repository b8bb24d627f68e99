"""The result cache: keyed by code and parameters, corruption detected, writes atomic."""

import pytest

from kdlib.cache import ResultCache, cache_key, code_hash
from kdlib.config import resolve


def test_key_changes_with_every_parameter_and_the_code():
    base = resolve("quick", "cpu", 0)
    key = cache_key("ch", "exp", base, code="abc")
    assert key == cache_key("ch", "exp", base, code="abc")
    others = [
        cache_key("ch2", "exp", base, code="abc"),
        cache_key("ch", "exp2", base, code="abc"),
        cache_key("ch", "exp", resolve("full", "cpu", 0), code="abc"),
        cache_key("ch", "exp", resolve("quick", "cpu", 1), code="abc"),
        cache_key("ch", "exp", base, code="abd"),
    ]
    assert key not in others and len(set(others)) == len(others)
    assert len(code_hash()) == 64


def test_roundtrip_and_get_or_run(tmp_path):
    cache = ResultCache(tmp_path)
    calls = []
    result, hit = cache.get_or_run("e", "k", lambda: calls.append(1) or {"a": [1, 2]})
    assert not hit and result == {"a": [1, 2]}
    result, hit = cache.get_or_run("e", "k", lambda: calls.append(1) or None)
    assert hit and result == {"a": [1, 2]} and len(calls) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupted_file_is_recomputed_not_used(tmp_path, damage):
    cache = ResultCache(tmp_path)
    path = cache.save("e", "k", list(range(1000)))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        path.write_bytes(b"not a cache file")
    with pytest.warns(UserWarning, match="corrupted"):
        result, hit = cache.get_or_run("e", "k", lambda: "fresh")
    assert (result, hit) == ("fresh", False)
    assert cache.load("e", "k") == (True, "fresh")


def _write_package(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_chapter_hash_follows_its_imports_only(tmp_path):
    """Editing one chapter's code (or a module only it imports) must not change another
    chapter's hash; editing a shared module, or the chapter, must change it."""
    pkg = tmp_path / "pkg"
    _write_package(
        pkg,
        {
            "__init__.py": "from . import core\n",
            "core.py": "X = 1\n",
            "shared.py": "Y = 2\n",
            "theory/__init__.py": "",
            "theory/a.py": "from ..shared import Y\n",
            "theory/b.py": "B = 3\n",
            "experiments/__init__.py": "from ..core import X\n",
            "experiments/a.py": "from ..theory import a as theory\n",
            "experiments/b.py": "def run():\n    from pkg.theory import b\n",
        },
    )
    a, b = pkg / "experiments" / "a.py", pkg / "experiments" / "b.py"

    def hashes():
        return code_hash(a, root=pkg), code_hash(b, root=pkg), code_hash(root=pkg)

    before = hashes()
    assert before[0] != before[1]
    (pkg / "theory" / "b.py").write_text("B = 4\n")  # only b imports it (inside a function)
    after = hashes()
    assert after[0] == before[0] and after[1] != before[1] and after[2] != before[2]
    (pkg / "shared.py").write_text("Y = 5\n")  # a imports it through theory/a.py
    again = hashes()
    assert again[0] != after[0] and again[1] == after[1]
    (pkg / "core.py").write_text("X = 6\n")  # imported by the package itself: both change
    last = hashes()
    assert last[0] != again[0] and last[1] != again[1]


def test_a_module_outside_the_package_is_hashed_with_all_of_it(tmp_path):
    outside = tmp_path / "extra.py"
    outside.write_text("Z = 1\n")
    first = code_hash(outside)
    outside.write_text("Z = 2\n")
    assert code_hash(outside) != first and len(first) == 64


def test_shared_work_is_computed_once_per_folder_code_and_inputs(tmp_path):
    from kdlib.cache import shared_work, shared_work_cache

    calls = []

    def compute():
        calls.append(1)
        return {"members": len(calls)}

    assert shared_work("w", ("a", 1), compute) == {"members": 1}  # no cache active: computed
    assert shared_work("w", ("a", 1), compute) == {"members": 2} and len(calls) == 2
    with shared_work_cache(tmp_path, code="abc"):
        first = shared_work("w", ("a", 1), compute)
    with shared_work_cache(tmp_path, code="abc"):  # a later process: reused from disk
        assert shared_work("w", ("a", 1), compute) == first and len(calls) == 3
        assert shared_work("w", ("a", 2), compute) == {"members": 4}  # other inputs
        assert shared_work("v", ("a", 1), compute) == {"members": 5}  # other work
    with shared_work_cache(tmp_path, code="abd"):  # other code: never reused
        assert shared_work("w", ("a", 1), compute) == {"members": 6}
    assert shared_work("w", ("a", 1), compute) == {"members": 7}  # the context was reset


def test_shared_work_interrupted_stores_nothing(tmp_path):
    from kdlib.cache import shared_work, shared_work_cache

    def interrupted():
        raise KeyboardInterrupt

    with shared_work_cache(tmp_path, code="abc"):
        with pytest.raises(KeyboardInterrupt):
            shared_work("w", 1, interrupted)
        assert shared_work("w", 1, lambda: "trained") == "trained"
    assert [p.name.split("-")[:2] for p in tmp_path.iterdir()] == [["shared", "w"]]


def test_chapter_members_are_cached_on_disk_and_reused(tmp_path, monkeypatch):
    """Chapter 5's members (a trained network and its logits) survive the disk: a second
    process-like call (in-memory cache cleared) loads them instead of training."""
    import torch

    from kdlib.cache import shared_work_cache
    from kdlib.experiments import multi_view

    key = multi_view._key(resolve("quick", "cpu", 0))
    multi_view._members.cache_clear()
    with shared_work_cache(tmp_path, code="abc"):
        trained = multi_view._members(key)
    multi_view._members.cache_clear()

    def no_training(_key):
        raise AssertionError("the members were trained again")

    monkeypatch.setattr(multi_view, "_train_members", no_training)
    with shared_work_cache(tmp_path, code="abc"):
        loaded = multi_view._members(key)
    multi_view._members.cache_clear()
    assert torch.equal(loaded.network.weight, trained.network.weight)
    assert torch.equal(loaded.test_logits, trained.test_logits)
    assert (loaded.init_correlations == trained.init_correlations).all()
