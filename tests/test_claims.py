"""Claims pass when the rule holds, raise when it does not, and are recorded."""

import numpy as np
import pytest

from kdlib.claims import (
    ClaimFailed,
    ClaimRecord,
    Claims,
    Ledger,
    fit_slope,
    records_to_markdown,
    summarize,
    t_halfwidth,
)
from kdlib.config import resolve


@pytest.fixture
def claims(tmp_path):
    return Claims("test", resolve("quick", "cpu"), ledger=Ledger(tmp_path / "ledger.json"))


def test_close_passes_and_fails(claims):
    assert claims.close("ok", 1.0, 1.05, rtol=0.1, why="t").passed
    with pytest.raises(ClaimFailed, match="predicted 1; measured 1.2"):
        claims.close("bad", 1.0, 1.2, rtol=0.1, why="t")


def test_close_on_arrays_reports_worst(claims):
    claims.close("arr", np.zeros(3), np.array([0.0, 1e-9, 0.0]), atol=1e-8)
    with pytest.raises(ClaimFailed, match="max \\|dev\\|"):
        claims.close("arr-bad", np.zeros(3), np.array([0.0, 1e-3, 0.0]), atol=1e-8)


def test_close_rejects_nan(claims):
    with pytest.raises(ClaimFailed):
        claims.close("nan", 1.0, float("nan"), atol=1.0)


def test_ordered(claims):
    claims.ordered("order", {"soft": 0.1, "hard": 0.3}, order=["soft", "hard"])
    with pytest.raises(ClaimFailed, match="soft < hard"):
        claims.ordered("order-bad", {"soft": 0.3, "hard": 0.1}, order=["soft", "hard"])
    with pytest.raises(ClaimFailed):
        claims.ordered("margin", {"a": 0.1, "b": 0.15}, order=["a", "b"], margin=0.1)
    with pytest.raises(ValueError, match="not present"):
        claims.ordered("typo", {"a": 1}, order=["a", "b"])


def test_slope_recovers_an_exponent(claims):
    x = np.array([10, 20, 40, 80, 160.0])
    assert abs(fit_slope(x, 3 * x**-0.5) + 0.5) < 1e-12
    claims.slope("rate", x, 3 * x**-0.5, predicted=-0.5, tol=0.05)
    with pytest.raises(ClaimFailed, match="slope"):
        claims.slope("rate-bad", x, 3 * x**-0.5, predicted=-1.0, tol=0.05)


def test_monotone_with_seeds(claims):
    rng = np.random.default_rng(0)
    x = np.arange(6)
    decreasing = (10 - x)[:, None] + 0.1 * rng.standard_normal((6, 30))
    claims.monotone("down", x, decreasing, "decreasing", strict=True)
    with pytest.raises(ClaimFailed, match="significantly"):
        claims.monotone("up", x, -decreasing, "decreasing")
    flat = np.ones((6, 1)) + 0.1 * rng.standard_normal((6, 30))
    claims.monotone("flat-ok", x, flat, "decreasing", strict=False)
    with pytest.raises(ClaimFailed):
        claims.monotone("flat-strict", x, flat, "decreasing", strict=True)


def test_monotone_exact(claims):
    claims.monotone("exact", [1, 2, 3], [3.0, 2.0, 2.0], "decreasing")
    with pytest.raises(ClaimFailed):
        claims.monotone("exact-bad", [1, 2, 3], [3.0, 2.0, 2.5], "decreasing")


def test_bounds(claims):
    claims.at_most("ub", 0.1, 0.2)
    claims.at_least("lb", 0.3, 0.2)
    with pytest.raises(ClaimFailed):
        claims.at_most("ub-bad", 0.3, 0.2)


def test_ledger_records_every_claim_and_replaces_reruns(tmp_path):
    ledger = Ledger(tmp_path / "l.json")
    claims = Claims("ch", resolve("quick", "cpu"), ledger=ledger)
    claims.close("a", 1.0, 1.0)
    with pytest.raises(ClaimFailed):
        claims.close("b", 1.0, 2.0)
    claims.close("a", 1.0, 1.0)
    rows = ledger.read()
    assert [(r.name, r.passed) for r in rows] == [("b", False), ("a", True)]
    assert "| ch | a |" in records_to_markdown(rows)


def _write_claims(path: str, chapter: str, count: int, start) -> None:
    ledger = Ledger(path)
    start.wait(timeout=60)  # all writers at once: without the lock, rows get lost
    for i in range(count):
        ledger.write(ClaimRecord(chapter, f"claim {i}", "rule", "1", "1", True))


def test_chapters_writing_one_ledger_at_once_keep_every_record(tmp_path):
    """Parallel test workers execute chapters at once: no process may drop another's rows."""
    import multiprocessing

    path = str(tmp_path / "l.json")
    # fork where there is one: the writers only touch JSON, and a spawned process would
    # import torch again (seconds each)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    start = context.Barrier(4)
    workers = [
        context.Process(target=_write_claims, args=(path, f"ch{k}", 60, start)) for k in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    rows = Ledger(path).read()
    assert sorted((r.chapter, r.name) for r in rows) == sorted(
        (f"ch{k}", f"claim {i}") for k in range(4) for i in range(60)
    )


def test_corrupt_ledger_reads_as_empty(tmp_path):
    path = tmp_path / "l.json"
    path.write_text("{ not json")
    assert Ledger(path).read() == []


def test_bad_arguments(claims):
    with pytest.raises(ValueError, match="rtol"):
        claims.close("x", 1, 1, rtol=-1)
    with pytest.raises(ValueError, match="direction"):
        claims.monotone("x", [1, 2], [1, 2], direction="up")
    with pytest.raises(ValueError, match="chapter"):
        Claims("")


def test_an_observation_is_recorded_but_never_raises():
    claims = Claims("demo", ledger=False)
    with claims.observing():
        record = claims.at_least("paper's figure", measured=-0.1, bound=0.0, why="t")
    assert record.verdict == "disagrees" and not record.enforced and not record.failed
    with pytest.raises(ClaimFailed):  # outside the block, claims are enforced again
        claims.at_least("theorem", measured=-0.1, bound=0.0, why="t")
    assert summarize(claims.records) == (
        "1 claims: 0 passed, 1 failed; 1 observations: 0 agree, 1 disagree"
    )


def test_t_halfwidth_matches_a_t_table_and_covers_at_its_level():
    samples = np.arange(1.0, 11.0)  # std 3.02765 (ddof 1), n = 10
    # t quantiles with 9 degrees of freedom from a printed table: 1.833113 (0.95), 2.262157 (0.975)
    assert t_halfwidth(samples) == pytest.approx(1.833113 * 3.0276504 / np.sqrt(10), rel=1e-6)
    assert t_halfwidth(samples, sided="two") == pytest.approx(
        2.262157 * 3.0276504 / np.sqrt(10), rel=1e-6
    )
    stacked = np.stack([samples, 2 * samples])
    np.testing.assert_allclose(t_halfwidth(stacked, axis=1), [1.755, 3.510], rtol=1e-3)
    # coverage: a one-sided 90% lower bound misses the true mean of normal data 10% of the time
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(40000, 5))
    misses = draws.mean(1) - t_halfwidth(draws, 0.9, axis=1) > 0
    assert abs(misses.mean() - 0.1) < 0.005  # 3.3 binomial standard errors
    for bad, match in (
        (dict(samples=[1.0]), "at least 2"),
        (dict(samples=[1.0, np.nan]), "finite"),
        (dict(samples=samples, confidence=1.0), "confidence"),
        (dict(samples=samples, sided="both"), "sided"),
    ):
        with pytest.raises(ValueError, match=match):
            t_halfwidth(**bad)


def test_monotone_refuses_nan_instead_of_passing_it(claims):
    rising = [[3.0, 3.1, 2.9], [4.0, float("nan"), 4.1], [5.0, 5.1, 4.9]]
    with pytest.raises(ValueError, match="finite"):
        claims.monotone("rising", [1, 2, 3], rising, direction="decreasing")


def test_monotone_with_one_seed_is_the_exact_comparison():
    claims = Claims("test", resolve("quick", "cpu"), ledger=False, raise_on_fail=False)
    record = claims.monotone("rising", [1, 2, 3], [[1.0], [2.0], [3.0]], direction="decreasing")
    assert not record.passed


def test_an_ordering_with_a_negative_margin_is_refused(claims):
    with pytest.raises(ValueError, match="margin"):
        claims.ordered("a < b", {"a": 3.0, "b": 2.0}, order=["a", "b"], margin=-5)


def test_a_slope_needs_two_different_x():
    with pytest.raises(ValueError, match="two different"):
        fit_slope([2, 2, 2], [1, 2, 3])


def test_a_one_sided_halfwidth_below_half_confidence_is_refused():
    with pytest.raises(ValueError, match="one-sided"):
        t_halfwidth([1.0, 2.0, 3.0], 0.2)


def test_parse_seeds_accepts_ranges_and_lists_and_names_the_option():
    from kdlib.claims import parse_seeds

    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5, 1,1-2") == [5, 1, 2]
    for bad in ("", "a", "3-1", "-1", "1-", "0-2-4"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_seed_study_lists_failing_claims_and_every_observation():
    from kdlib.claims import seed_study

    def claims_at(seed):
        claims = Claims("demo", ledger=False, raise_on_fail=False)
        claims.at_most("always", measured=0.0, bound=1.0)
        claims.at_most("odd seeds fail", measured=float(seed % 2), bound=0.5)
        with claims.observing():
            claims.at_least("paper", measured=float(seed), bound=1.0)
        return claims.records

    table, failed = seed_study({s: claims_at(s) for s in (0, 1, 2)})
    assert failed
    assert "| demo | odd seeds fail | claim | 0, 1, 2 | 0, 2 |" in table
    assert "| demo | paper | observation | 0, 1, 2 | 1, 2 |" in table
    assert "always" not in table.split("\n\n")[0]  # held everywhere: only counted
    assert "1 of 2 claims held at every seed" in table
    table, failed = seed_study({0: claims_at(0)})
    assert not failed and "2 of 2 claims held at every seed" in table
    with pytest.raises(ValueError, match="records_by_seed"):
        seed_study({})


def test_paired_difference_counts_only_discordant_points():
    from kdlib.claims import paired_difference

    a = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)
    b = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], dtype=bool)  # 3 discordant of 8
    gap, half = paired_difference(a, b)
    assert gap == pytest.approx(1 / 8) and half == pytest.approx(3 * np.sqrt(3) / 8)
    assert paired_difference(a, a) == (0.0, 1 / 8)  # identical: the resolution 1 / N
    # an independent reference: the normal-approximation McNemar interval of the paired mean
    rng = np.random.default_rng(0)
    x, y = rng.random(2000) < 0.7, rng.random(2000) < 0.6
    d = x.astype(float) - y.astype(float)
    _, half = paired_difference(x, y, z=2.0)
    assert half == pytest.approx(2 * np.sqrt((d**2).sum()) / d.size)
    for bad in [(a, a[:1]), (a[:0], a[:0]), (a * 2.0, a)]:
        with pytest.raises(ValueError, match="correct_a"):
            paired_difference(*bad)
    with pytest.raises(ValueError, match="z must be positive"):
        paired_difference(a, b, z=0)
