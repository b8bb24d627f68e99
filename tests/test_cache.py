"""The result cache: keyed by code and parameters, corruption detected, writes atomic."""

import sys

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


# -- notebooks reading reproduce's results ($KDLIB_RESULTS) ---------------------------------------

STORED_CHAPTER = """
import dataclasses, types
from kdlib.experiments import Experiment, stored_run
from kdlib.cache import shared_work

CHAPTER = "stored"
TITLE = "A chapter whose runs are counted"


@dataclasses.dataclass(frozen=True)
class Setting:
    steps: int


QUICK = Setting(3)
COUNT = types.SimpleNamespace(runs=0, work=0)  # not a setting: its repr is not plain


def _work(config):
    COUNT.work += 1
    return 10 * QUICK.steps


@stored_run
def run_steps(config, offset=0):
    COUNT.runs += 1
    return {"steps": shared_work("work", (config, QUICK), lambda: _work(config)) + offset}


def check(result, claims):
    claims.at_least("steps", result["steps"], 0.0)


EXPERIMENTS = [Experiment("steps", run_steps, check)]
"""


@pytest.fixture
def stored_chapter(tmp_path, monkeypatch):
    """A chapter module importable as ``fake_stored`` (and listed by ``kdlib.experiments``)."""
    import importlib

    (tmp_path / "fake_stored.py").write_text(STORED_CHAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KDLIB_EXTRA_CHAPTERS", "fake_stored")
    monkeypatch.delenv("KDLIB_RESULTS", raising=False)
    module = importlib.import_module("fake_stored")
    yield module
    sys.modules.pop("fake_stored", None)


def test_stored_run_computes_and_writes_nothing_without_the_variable(stored_chapter, tmp_path):
    config = resolve("quick", "cpu")
    before = sorted(tmp_path.rglob("*"))
    assert stored_chapter.run_steps(config) == stored_chapter.run_steps(config) == {"steps": 30}
    assert stored_chapter.COUNT.runs == 2 and sorted(tmp_path.rglob("*")) == before


def test_a_notebook_run_is_stored_then_read_back(stored_chapter, tmp_path, monkeypatch, capsys):
    """With $KDLIB_RESULTS the first call computes and stores (its shared work too); the next
    call reads the file, says so, and computes nothing; extra arguments compute their result
    (not stored) from the stored shared work."""
    monkeypatch.setenv("KDLIB_RESULTS", str(tmp_path / "results"))
    config = resolve("quick", "cpu")
    first = stored_chapter.run_steps(config)
    cache = tmp_path / "results" / "quick" / "stored" / "cache"
    assert [p.name.split("-")[0] for p in sorted(cache.glob("*.pkl"))] == ["shared", "steps"]
    assert stored_chapter.run_steps(config) == first == {"steps": 30}
    assert stored_chapter.COUNT.runs == 1 and stored_chapter.COUNT.work == 1
    assert "stored/steps: stored result read from" in capsys.readouterr().out
    assert stored_chapter.run_steps(config, offset=1) == {"steps": 31}  # not the stored result
    assert stored_chapter.COUNT.runs == 2 and stored_chapter.COUNT.work == 1
    assert len(list(cache.glob("*.pkl"))) == 2
    assert stored_chapter.run_steps(resolve("quick", "cpu", 1)) == first  # another seed: a run
    assert stored_chapter.COUNT.runs == 3


def test_a_setting_changed_in_the_session_is_not_served_the_old_result(
    stored_chapter, tmp_path, monkeypatch
):
    import dataclasses

    monkeypatch.setenv("KDLIB_RESULTS", str(tmp_path / "results"))
    config = resolve("quick", "cpu")
    assert stored_chapter.run_steps(config) == {"steps": 30}
    stored_chapter.QUICK = dataclasses.replace(stored_chapter.QUICK, steps=5)
    assert stored_chapter.run_steps(config) == {"steps": 50}
    assert stored_chapter.COUNT.runs == 2


def test_a_notebook_reads_what_reproduce_stored_and_reproduce_writes_once(
    stored_chapter, tmp_path, monkeypatch, capsys
):
    """``reproduce --out F`` and a notebook with KDLIB_RESULTS=F share files and keys; inside
    ``reproduce`` the decorated run does not store a second copy."""
    from kdlib.__main__ import run_chapters

    config = resolve("quick", "cpu")
    monkeypatch.setenv("KDLIB_RESULTS", str(tmp_path / "results"))  # also set during reproduce
    run_chapters("stored", config, tmp_path / "results", figures=False)
    cache = tmp_path / "results" / "quick" / "stored" / "cache"
    assert len(list(cache.glob("steps-*.pkl"))) == 1 and stored_chapter.COUNT.runs == 1
    assert stored_chapter.run_steps(config) == {"steps": 30}
    assert stored_chapter.COUNT.runs == 1
    assert "stored/steps: stored result read from" in capsys.readouterr().out


def test_chapter_code_covers_plain_settings_only(stored_chapter):
    from kdlib.experiments import _is_plain, chapter_code

    assert _is_plain(stored_chapter.QUICK) and _is_plain({"a": (1, 2.0, None, "x")})
    assert not _is_plain(stored_chapter.COUNT) and not _is_plain({1, 2})
    assert not _is_plain(stored_chapter.EXPERIMENTS)  # functions: their reprs hold addresses
    before = chapter_code(stored_chapter)
    stored_chapter.COUNT.runs += 1  # state, not a setting
    assert chapter_code(stored_chapter) == before
    stored_chapter.TITLE = "Another title"
    assert chapter_code(stored_chapter) != before


def test_every_chapter_run_is_stored_under_its_reproduce_name():
    """A notebook's call of each decorated run function finds the file ``reproduce`` wrote: the
    name is that of the first experiment running it (chapter 4's students serve two)."""
    from kdlib.experiments import _experiment_name, chapters

    for module in chapters().values():
        first: dict[object, str] = {}
        for experiment in module.EXPERIMENTS:
            first.setdefault(experiment.run, experiment.name)
        for run, name in first.items():
            assert getattr(run, "stores_results", False), f"{module.CHAPTER}/{name}: not stored"
            assert _experiment_name(module, run, run.__wrapped__) == name
