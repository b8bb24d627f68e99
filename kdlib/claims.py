"""Executable claims: a theorem's prediction checked against a measurement.

A *claim* states what theory predicts, what a simulation measured, and the rule that must hold
between them. These rules cover the book:

* :meth:`Claims.close` - equality within a tolerance,
  ``|measured - predicted| <= atol + rtol |predicted|``;
* :meth:`Claims.ordered` - an ordering of named quantities (``a < b < c``);
* :meth:`Claims.slope` - a rate: the least-squares slope of ``y`` on ``x`` (log-log by default);
* :meth:`Claims.monotone` - a curve that does not rise (or fall), judged across seeds;
* :meth:`Claims.at_most` / :meth:`Claims.at_least` - a bound.

Inside ``with claims.observing():`` the same rules record an *observation* instead: a paper's
empirical finding, or a theorem's asymptotic bound measured far outside its regime, that the book
reproduces and reports whichever way it comes out. An observation never raises; the ledger marks
it ``agrees`` or ``disagrees``, and the appendix lists observations apart from the theorems'
claims, so a disagreement with a paper is shown as a finding rather than hidden or allowed to pass
as a proof.

A failed claim raises :class:`ClaimFailed` whose message shows predicted, measured and the rule, so
a notebook whose theorem does not hold fails to execute, and so do the tests. Every checked claim
(passed or failed) is written to a ledger file, from which the book's appendix lists all claims.

Tolerances are arguments, and each call site must say where its tolerance comes from (``why=``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from .config import RunConfig, resolve

LEDGER_ENV = "KDLIB_LEDGER"


class ClaimFailed(AssertionError):
    """A theorem's prediction was not borne out by the simulation."""


@dataclass
class ClaimRecord:
    """One checked claim, as stored in the ledger."""

    chapter: str
    name: str
    rule: str
    predicted: str
    measured: str
    passed: bool
    why: str = ""
    scale: str = "quick"
    device: str = "cpu"
    seed: int = 0
    checked_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat())
    enforced: bool = True

    @property
    def verdict(self) -> str:
        """``"pass"`` or ``"FAIL"`` for a claim; ``"agrees"`` or ``"disagrees"`` for an
        observation (see :meth:`Claims.observing`)."""
        if not self.enforced:
            return "agrees" if self.passed else "disagrees"
        return "pass" if self.passed else "FAIL"

    @property
    def failed(self) -> bool:
        """A claim (not an observation) that did not hold."""
        return self.enforced and not self.passed


def _as_float(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar; got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"{name} must be a scalar; got an array of shape {value.shape}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    return float(value)


def _as_array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    return array


def _fmt(value: float) -> str:
    if isinstance(value, str):
        return value
    if value == 0 or math.isnan(value) or math.isinf(value):
        return f"{value}"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"


def default_ledger_path() -> Path:
    """Where claims are recorded: ``$KDLIB_LEDGER``, else ``_build/kdlib/claims.json`` under the
    book's root (the nearest parent folder holding ``_toc.yml``), else ``~/.cache/kdlib``."""
    if os.environ.get(LEDGER_ENV):
        return Path(os.environ[LEDGER_ENV])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists():
            return folder / "_build" / "kdlib" / "claims.json"
    return Path.home() / ".cache" / "kdlib" / "claims.json"


class Ledger:
    """A JSON file of claim records, one per (chapter, claim name, scale); the latest check wins.

    Keyed rather than appended so that re-running a chapter replaces its rows instead of
    duplicating them, and a chapter skipped by the build cache keeps its last rows.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_ledger_path()

    def read(self) -> list[ClaimRecord]:
        """All records, in the order they were first written. A corrupt file reads as empty."""
        if not self.path.exists():
            return []
        try:
            rows = json.loads(self.path.read_text())
            return [ClaimRecord(**row) for row in rows]
        except (json.JSONDecodeError, TypeError):
            return []

    def write(self, record: ClaimRecord) -> None:
        """Insert or replace ``record`` (atomically: an interrupted write leaves the old file).

        The read-modify-write holds a lock file beside the ledger, so chapters executed in
        parallel (``pytest -n 2``, two builds) never drop each other's records."""
        key = (record.chapter, record.name, record.scale)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.path}.lock"):
            records = [r for r in self.read() if (r.chapter, r.name, r.scale) != key] + [record]
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
            tmp.replace(self.path)


class Claims:
    """The claims of one chapter, checked against one run's settings.

    Parameters
    ----------
    chapter : str
        Short chapter id, e.g. ``"soft-labels"``; groups the claims in the appendix.
    config : RunConfig, optional
        The run's scale, device and seed (recorded with each claim). Default: :func:`resolve`.
    ledger : Ledger or None or False, optional
        Where to record claims; default :class:`Ledger` at :func:`default_ledger_path`.
        Pass ``False`` to record nothing (unit tests).
    raise_on_fail : bool
        Raise :class:`ClaimFailed` on a failed claim (default). The record is written first.

    Examples
    --------
    >>> claims = Claims("demo", ledger=False)
    >>> claims.close("pi", predicted=3.14159, measured=3.1416, rtol=1e-4, why="4 digits").passed
    True
    """

    def __init__(
        self,
        chapter: str,
        config: RunConfig | None = None,
        ledger: Ledger | None | bool = None,
        raise_on_fail: bool = True,
    ):
        if not isinstance(chapter, str) or not chapter:
            raise ValueError("chapter must be a non-empty string")
        self.chapter = chapter
        self.config = config if config is not None else resolve()
        if ledger is False:
            self.ledger = None
        else:
            self.ledger = ledger if isinstance(ledger, Ledger) else Ledger()
        self.raise_on_fail = raise_on_fail
        self.records: list[ClaimRecord] = []
        self._observing = False

    @contextlib.contextmanager
    def observing(self) -> Iterator[Claims]:
        """Record the rules checked inside the block as *observations*: a paper's empirical
        finding reproduced here, reported as ``agrees``/``disagrees`` and never raised.

        Use it for what a paper observes in experiments, and for a theorem's prediction only where
        the simulation lies outside the theorem's regime (an asymptotic bound at small sizes) and
        the chapter says so; the chapter must discuss a disagreement in its text.

        Examples
        --------
        >>> claims = Claims("demo", ledger=False)
        >>> with claims.observing():
        ...     claims.at_least("gain", measured=-0.1, bound=0.0, why="paper's Fig. 1").verdict
        'disagrees'
        """
        previous, self._observing = self._observing, True
        try:
            yield self
        finally:
            self._observing = previous

    # -- rules ---------------------------------------------------------------------------------

    def close(
        self,
        name: str,
        predicted,
        measured,
        rtol: float = 0.0,
        atol: float = 0.0,
        why: str = "",
    ) -> ClaimRecord:
        """Claim ``|measured - predicted| <= atol + rtol * |predicted|``.

        ``predicted`` and ``measured`` may be scalars or arrays of the same shape (then the
        largest violation decides, and the record shows the largest deviation).
        """
        if rtol < 0 or atol < 0:
            raise ValueError(f"rtol and atol must be >= 0; got rtol={rtol}, atol={atol}")
        pred = _as_array(predicted, "predicted")
        meas = _as_array(measured, "measured")
        if pred.shape != meas.shape and pred.size != 1:
            raise ValueError(f"predicted shape {pred.shape} != measured shape {meas.shape}")
        allowed = atol + rtol * np.abs(pred)
        deviation = np.abs(meas - pred)
        passed = bool(np.all(deviation <= allowed)) and bool(np.all(np.isfinite(meas)))
        if pred.size == 1 and meas.size == 1:
            pred_s, meas_s = _fmt(pred.item()), _fmt(meas.item())
        else:
            worst = int(np.argmax(deviation - allowed))
            pred_s = f"{_fmt(pred.flat[min(worst, pred.size - 1)])} (worst of {meas.size})"
            meas_s = f"{_fmt(meas.flat[worst])} (max |dev| {_fmt(float(deviation.max()))})"
        rule = f"|measured - predicted| <= {_fmt(atol)} + {_fmt(rtol)}|predicted|"
        return self._record(name, rule, pred_s, meas_s, passed, why)

    def ordered(
        self,
        name: str,
        values: Mapping[str, float],
        order: Sequence[str],
        margin: float = 0.0,
        why: str = "",
    ) -> ClaimRecord:
        """Claim ``values[order[0]] + margin < values[order[1]] + ...``: strictly increasing along
        ``order`` by more than ``margin`` at each step."""
        missing = [key for key in order if key not in values]
        if missing:
            raise ValueError(f"order names {missing} not present in values {list(values)}")
        if len(order) < 2:
            raise ValueError("order must name at least two quantities")
        if isinstance(margin, bool) or not (
            isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0
        ):
            raise ValueError(f"margin must be a finite number >= 0; got {margin!r}")
        nums = [_as_float(values[key], f"values[{key!r}]") for key in order]
        passed = all(b - a > margin for a, b in zip(nums, nums[1:], strict=False))
        rule = " < ".join(order) + (f" (each gap > {_fmt(margin)})" if margin else "")
        measured = ", ".join(f"{k}={_fmt(v)}" for k, v in zip(order, nums, strict=True))
        return self._record(name, rule, " < ".join(order), measured, passed, why)

    def slope(
        self,
        name: str,
        x,
        y,
        predicted: float,
        tol: float,
        log: bool = True,
        why: str = "",
    ) -> ClaimRecord:
        """Claim the least-squares slope of ``y`` on ``x`` is ``predicted +/- tol``.

        With ``log=True`` both axes are log-transformed first, so the slope is an exponent
        (``y ~ x^slope``). ``y`` may have a trailing seed axis; it is averaged first.
        """
        measured = fit_slope(x, y, log=log)
        rule = f"slope{' (log-log)' if log else ''} within {_fmt(tol)} of predicted"
        passed = abs(measured - predicted) <= tol
        return self._record(name, rule, _fmt(predicted), _fmt(measured), passed, why)

    def monotone(
        self,
        name: str,
        x,
        y,
        direction: str = "decreasing",
        strict: bool = False,
        confidence: float = 0.99,
        why: str = "",
    ) -> ClaimRecord:
        """Claim ``y`` does not rise (``decreasing``) or fall (``increasing``) as ``x`` grows.

        ``y`` has shape ``(len(x),)`` or ``(len(x), seeds)``. With seeds, each step is judged by a
        paired one-sided t-test across seeds at the given confidence (Bonferroni-corrected over the
        steps): ``strict=False`` fails when some step moves the wrong way significantly;
        ``strict=True`` also fails unless every step moves the right way significantly. Without
        seeds the comparison is exact.
        """
        if direction not in ("decreasing", "increasing"):
            raise ValueError(f"direction must be 'decreasing' or 'increasing'; got {direction!r}")
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1); got {confidence}")
        xs = _as_array(x, "x")
        ys = _as_array(y, "y")
        if ys.shape[0] != xs.shape[0]:
            raise ValueError(f"y has {ys.shape[0]} rows but x has {xs.shape[0]} points")
        if xs.ndim != 1 or ys.ndim > 2:
            raise ValueError(
                f"x must be 1-D and y (len(x),) or (len(x), seeds); got {xs.shape} and {ys.shape}"
            )
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise ValueError(f"claim {name!r}: x and y must be finite (a NaN would pass unseen)")
        if ys.ndim == 2 and ys.shape[1] == 1:  # one seed: no t-test, the exact comparison
            ys = ys[:, 0]
        ys = ys[np.argsort(xs)]
        sign = -1.0 if direction == "decreasing" else 1.0
        steps = sign * np.diff(ys, axis=0)  # > 0 means the right direction
        if steps.ndim == 1:
            worst = float(steps.min())
            passed = worst > 0 if strict else worst >= 0
            measured = f"worst step {_fmt(sign * worst)}"
        else:
            from scipy import stats

            n_seeds = steps.shape[1]
            level = (1 - confidence) / steps.shape[0]
            mean = steps.mean(axis=1)
            sem = steps.std(axis=1, ddof=1) / math.sqrt(n_seeds) + 1e-300
            t_crit = stats.t.ppf(1 - level, df=n_seeds - 1)
            wrong_way = mean + t_crit * sem < 0  # significantly the wrong way
            right_way = mean - t_crit * sem > 0
            passed = not wrong_way.any() and (right_way.all() if strict else True)
            worst = int(np.argmin(mean))
            measured = (
                f"{int(right_way.sum())}/{len(mean)} steps significantly {direction}, "
                f"{int(wrong_way.sum())} significantly the other way (worst mean step "
                f"{_fmt(sign * float(mean[worst]))} +/- {_fmt(float(t_crit * sem[worst]))})"
            )
        rule = f"{'strictly ' if strict else 'non-'}{direction}" + (
            f" (paired t-test, {confidence:.0%})" if ys.ndim > 1 else ""
        )
        predicted = f"{'strictly ' if strict else ''}{direction} in x"
        return self._record(name, rule, predicted, measured, bool(passed), why)

    def at_most(self, name: str, measured, bound, why: str = "") -> ClaimRecord:
        """Claim ``measured <= bound`` (a theorem's upper bound)."""
        meas = _as_float(measured, "measured")
        bnd = _as_float(bound, "bound")
        return self._record(name, "measured <= bound", _fmt(bnd), _fmt(meas), meas <= bnd, why)

    def at_least(self, name: str, measured, bound, why: str = "") -> ClaimRecord:
        """Claim ``measured >= bound`` (a theorem's lower bound)."""
        meas = _as_float(measured, "measured")
        bnd = _as_float(bound, "bound")
        return self._record(name, "measured >= bound", _fmt(bnd), _fmt(meas), meas >= bnd, why)

    # -- reporting -----------------------------------------------------------------------------

    def table(self) -> str:
        """The claims checked so far as a Markdown table."""
        return records_to_markdown(self.records, with_chapter=False)

    def _repr_markdown_(self) -> str:
        return self.table()

    def _record(
        self, name: str, rule: str, predicted: str, measured: str, passed: bool, why: str
    ) -> ClaimRecord:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        record = ClaimRecord(
            chapter=self.chapter,
            name=name,
            rule=rule,
            predicted=predicted,
            measured=measured,
            passed=bool(passed),
            why=why,
            scale=self.config.scale,
            device=str(self.config.device),
            seed=self.config.seed,
            enforced=not self._observing,
        )
        self.records.append(record)
        if self.ledger is not None:
            self.ledger.write(record)
        if record.failed and self.raise_on_fail:
            raise ClaimFailed(
                f"[{self.chapter}] claim '{name}' failed: predicted {predicted}; "
                f"measured {measured}; rule: {rule}"
            )
        return record


def t_halfwidth(samples, confidence: float = 0.95, axis: int = -1, sided: str = "one"):
    """Half-width of Student's ``t`` confidence interval for the mean of ``samples`` along
    ``axis``: ``t_q(n - 1) * std / sqrt(n)``, with ``q = confidence`` for a one-sided bound
    (``mean - halfwidth`` is a lower, ``mean + halfwidth`` an upper ``confidence`` bound) and
    ``q = (1 + confidence) / 2`` for a two-sided interval.

    Parameters
    ----------
    samples : array_like
        At least two finite values along ``axis``.
    confidence : float in (0, 1)
    axis : int
    sided : {"one", "two"}

    Returns
    -------
    float or ndarray
        A float for one-dimensional ``samples``, else an array without ``axis``.
    """
    from scipy import stats

    values = np.asarray(samples, dtype=float)
    if sided not in ("one", "two"):
        raise ValueError(f"sided must be 'one' or 'two'; got {sided!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    if sided == "one" and confidence < 0.5:
        raise ValueError(f"a one-sided confidence must be >= 0.5; got {confidence!r}")
    if values.ndim == 0 or values.shape[axis] < 2:
        raise ValueError(f"samples need at least 2 values along axis {axis}; got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("samples must be finite")
    n = values.shape[axis]
    level = confidence if sided == "one" else 0.5 + confidence / 2
    half = stats.t.ppf(level, n - 1) * values.std(axis=axis, ddof=1) / math.sqrt(n)
    return float(half) if np.ndim(half) == 0 else half


def paired_difference(correct_a, correct_b, z: float = 3.0) -> tuple[float, float]:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same test points, and ``z`` paired
    standard errors of that difference.

    The paired standard error counts only the points on which the two models disagree (one right,
    the other wrong): ``sqrt(discordant) / N`` for ``N`` points in all, at least the resolution
    ``1 / N``. Two models that differ on a few points of a flat curve are therefore not told apart,
    while the same gap between models that agree elsewhere is.

    Parameters
    ----------
    correct_a, correct_b : array_like of bool, the same shape
        Which points each model classifies correctly (any shape: seeds x points, ...).
    z : float
        Number of standard errors (3: about 99.7% two-sided).

    Returns
    -------
    (float, float)
        The mean difference and ``z`` standard errors.
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"correct_a and correct_b need the same non-empty shape; got {a.shape}, {b.shape}"
        )
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise ValueError("correct_a and correct_b must hold booleans (or 0/1 values)")
    if not z > 0:
        raise ValueError(f"z must be positive; got {z!r}")
    diff = a.astype(float) - b.astype(float)
    discordant = int(np.count_nonzero(diff))
    return float(diff.mean()), z * max(math.sqrt(discordant), 1.0 / z) / diff.size


def fit_slope(x, y, log: bool = True) -> float:
    """Least-squares slope of ``y`` (seed axis last, averaged) on ``x``; log-log if ``log``."""
    xs = _as_array(x, "x")
    ys = _as_array(y, "y")
    if ys.ndim == 2:
        ys = ys.mean(axis=1)
    if xs.shape != ys.shape or xs.size < 2:
        raise ValueError(f"x and y need the same length >= 2; got {xs.shape} and {ys.shape}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite")
    if log:
        if (xs <= 0).any() or (ys <= 0).any():
            raise ValueError("log-log slope needs positive x and y")
        xs, ys = np.log(xs), np.log(ys)
    if np.ptp(xs) == 0:
        raise ValueError("x must take at least two different values for a slope")
    return float(np.polyfit(xs, ys, 1)[0])


def summarize(records: Sequence[ClaimRecord]) -> str:
    """One line: how many claims passed and failed, and how many observations of the papers'
    experiments agree or disagree (e.g. ``"120 claims: 120 passed, 0 failed; 4 observations:
    2 agree, 2 disagree"``)."""
    claims = [r for r in records if r.enforced]
    observed = [r for r in records if not r.enforced]
    line = (
        f"{len(claims)} claims: {sum(r.passed for r in claims)} passed, "
        f"{sum(not r.passed for r in claims)} failed"
    )
    if observed:
        line += (
            f"; {len(observed)} observations: {sum(r.passed for r in observed)} agree, "
            f"{sum(not r.passed for r in observed)} disagree"
        )
    return line


def records_to_markdown(records: Sequence[ClaimRecord], with_chapter: bool = True) -> str:
    """Render records as a Markdown table (predicted, measured, rule, verdict)."""
    head = ["claim", "predicted", "measured", "rule", "verdict"]
    if with_chapter:
        head = ["chapter", *head, "scale", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [r.name, r.predicted, r.measured, r.rule, r.verdict]
        if with_chapter:
            cells = [r.chapter, *cells, r.scale, r.device]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-7"``, ``"0,3,5"`` or a mix (``"0-2,9"``), in order, without repeats.

    Raises
    ------
    ValueError
        Naming ``--seeds`` and the accepted forms, for anything else (negative or empty ranges,
        words).
    """
    allowed = "comma-separated non-negative seeds or ranges, e.g. 0-7 or 0,3,5"
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            start, stop = int(low), int(high) if dash else int(low)
        except ValueError:
            raise ValueError(f"--seeds must be {allowed}; got {text!r}") from None
        if start < 0 or stop < start:
            raise ValueError(f"--seeds must be {allowed}; got {text!r}")
        seeds.extend(s for s in range(start, stop + 1) if s not in seeds)
    return seeds


def seed_study(records_by_seed: Mapping[int, Sequence[ClaimRecord]]) -> tuple[str, bool]:
    """How the book's claims fare across seeds: a Markdown table and whether any claim failed.

    The table lists every claim that failed at some seed (with those seeds), then every
    observation with the seeds at which it agreed; the last line counts claims that passed at
    every seed they were checked at. A claim whose name depends on the run (one branch or
    another of a check) is counted once per name.

    Parameters
    ----------
    records_by_seed : mapping of seed to the records of one run at that seed

    Returns
    -------
    (str, bool)
        The report, and ``True`` if some claim (not an observation) failed at some seed.
    """
    if not records_by_seed:
        raise ValueError("records_by_seed must hold at least one seed's records")
    checked: dict[tuple[str, str, bool], list[int]] = {}
    held: dict[tuple[str, str, bool], list[int]] = {}
    for seed, records in records_by_seed.items():
        for r in records:
            key = (r.chapter, r.name, r.enforced)
            checked.setdefault(key, []).append(seed)
            if r.passed:
                held.setdefault(key, []).append(seed)

    def seeds_text(values: Sequence[int]) -> str:
        return ", ".join(str(s) for s in values) if values else "none"

    failing = [k for k in checked if k[2] and len(held.get(k, [])) < len(checked[k])]
    observations = [k for k in checked if not k[2]]
    lines = [
        "| chapter | claim | kind | checked at seeds | held at seeds |",
        "|---|---|---|---|---|",
    ]
    for key in failing + observations:
        chapter, name, enforced = key
        cells = [
            chapter,
            name,
            "claim" if enforced else "observation",
            seeds_text(checked[key]),
            seeds_text(held.get(key, [])),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    n_claims = sum(1 for k in checked if k[2])
    lines.append("")
    lines.append(
        f"{len(records_by_seed)} seeds ({seeds_text(list(records_by_seed))}): "
        f"{n_claims - len(failing)} of {n_claims} claims held at every seed they were checked at; "
        f"{len(failing)} failed at some seed; {len(observations)} observations"
    )
    return "\n".join(lines), bool(failing)
