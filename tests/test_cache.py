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
