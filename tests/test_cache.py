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
