"""`python -m kdlib`: chapter selection, caching across runs, claims table and exit status."""

import types
from dataclasses import dataclass

import pytest
import torch

import kdlib.__main__ as cli
from kdlib.experiments import Experiment, chapters


@dataclass
class _Result:
    value: float


def _fake_chapter(calls, predicted=1.0):
    def run(config):
        calls.append(config.scale)
        return _Result(1.0)

    def check(result, claims):
        claims.close("value", predicted=predicted, measured=result.value, atol=1e-9)

    def plot(result):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, result.value])
        return fig

    return types.SimpleNamespace(
        CHAPTER="fake", TITLE="Fake", EXPERIMENTS=[Experiment("only", run, check, plot)]
    )


@pytest.fixture
def fake(monkeypatch):
    calls = []
    module = _fake_chapter(calls)
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: {"fake": module}[c])
    return calls, module


def test_reproduce_writes_figures_claims_and_caches(fake, tmp_path, capsys):
    calls, _ = fake
    assert cli.main(["reproduce", "fake", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert cli.main(["reproduce", "all", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert calls == ["quick"]  # second run came from the cache
    folder = tmp_path / "quick" / "fake"
    assert (folder / "only.png").exists() and "| fake | value |" in (
        folder / "claims.md"
    ).read_text()
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_only_runs_the_named_experiments_and_rejects_unknown_names(monkeypatch, tmp_path, capsys):
    calls = []
    module = _fake_chapter(calls)
    second = _fake_chapter(calls, predicted=2.0).EXPERIMENTS[0]  # would fail if it ran
    module.EXPERIMENTS.append(Experiment("other", second.run, second.check, None))
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: {"fake": module}[c])
    argv = ["reproduce", "fake", "--out", str(tmp_path), "--device", "cpu", "--only", "only"]
    assert cli.main(argv) == 0 and calls == ["quick"]
    with pytest.raises(SystemExit):
        cli.main(argv[:-1] + ["nope"])
    assert "only must name experiments" in capsys.readouterr().err and calls == ["quick"]


def test_claims_table_keeps_the_experiments_of_earlier_only_runs(monkeypatch, tmp_path):
    calls = []
    module = _fake_chapter(calls)
    first = module.EXPERIMENTS[0]

    def check_other(result, claims):
        claims.close("other value", predicted=1.0, measured=result.value, atol=1e-9)

    module.EXPERIMENTS.append(Experiment("other", first.run, check_other, None))
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: {"fake": module}[c])
    argv = ["reproduce", "fake", "--out", str(tmp_path), "--device", "cpu", "--only"]
    assert cli.main(argv + ["only"]) == 0
    assert cli.main(argv + ["other"]) == 0
    table = (tmp_path / "quick" / "fake" / "claims.md").read_text()
    assert "| fake | value |" in table and "| fake | other value |" in table


def test_missing_data_skips_that_experiment_only_with_exit_status_2(monkeypatch, tmp_path, capsys):
    calls = []
    module = _fake_chapter(calls)

    def needs_data(config):
        raise FileNotFoundError("no MNIST here; run fetch-mnist")

    module.EXPERIMENTS.insert(0, Experiment("data", needs_data, lambda r, c: None, None))
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: {"fake": module}[c])
    assert cli.main(["reproduce", "fake", "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert calls == ["quick"]  # the experiment after it still ran
    assert "fake/data: no MNIST here; run fetch-mnist" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):  # library callers see the error itself
        cli.run_chapters("fake", cli.resolve("quick", "cpu"), tmp_path)


def test_failed_claim_gives_exit_status_1(monkeypatch, tmp_path):
    module = _fake_chapter([], predicted=2.0)
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    assert cli.main(["claims", "--out", str(tmp_path), "--device", "cpu"]) == 1


def test_unknown_chapter_and_scale_are_clear_errors(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "no-such-chapter"])
    assert "unknown chapter" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["claims", "--scale", "huge"])
    assert "scale must be one of" in capsys.readouterr().err


def test_every_chapter_module_is_well_formed():
    for chapter_id, module in chapters().items():
        assert module.CHAPTER == chapter_id and module.TITLE
        names = [e.name for e in module.EXPERIMENTS]
        assert len(names) == len(set(names)) and all(
            isinstance(e, Experiment) for e in module.EXPERIMENTS
        )


def test_bench_runs_at_a_tiny_size(monkeypatch, capsys):
    from kdlib import bench

    monkeypatch.setitem(
        bench.SIZES,
        "small",
        {"n": 8, "d": 3, "width": 4, "replicas": 4, "loop_subset": 2, "repeats": 1},
    )
    monkeypatch.setattr(bench, "STEPS", 3)
    assert bench.main("cpu", ["small"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("speedup_vs_loop: ")


def test_one_size_can_be_timed_roughly_and_bad_overrides_are_refused(monkeypatch):
    from kdlib import bench

    monkeypatch.setattr(bench, "STEPS", 3)
    timing = bench.run_size("small", torch.device("cpu"), repeats=1, loop_subset=4)
    assert min(timing.loop, timing.vmap, timing.kdlib) > 0 and timing.flops > 0
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        bench.run_size("small", torch.device("cpu"), repeats=0)
    with pytest.raises(ValueError, match="name must be one of"):
        bench.run_size("huge", torch.device("cpu"))


def test_kernel_bench_runs_at_a_tiny_size(monkeypatch, capsys):
    from kdlib import bench

    tiny = {
        "wide": {"replicas": 3, "n": 6, "d": 4, "width": 16, "steps": 2},
        "relu": {"rows": 20, "cols": 8, "repeats": 1},
        "patch": {"replicas": 2, "n": 5, "patches": 3, "dim": 4, "classes": 2, "width": 2},
        "linearised": {"replicas": 2, "n": 5, "dim": 4, "classes": 2, "width": 2},
        "linear": {"replicas": 3, "n": 5, "d": 4, "k": 1},
        "cnn": {"replicas": 4, "groups": 2, "n": 3, "side": 4, "channels": 2, "classes": 3},
        "log_softmax": {"replicas": 2, "n": 3, "classes": 4, "repeats": 1},
    }
    monkeypatch.setattr(bench, "KERNEL_SIZES", tiny)
    assert cli.main(["bench", "--kernels", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("kernels_min_speedup: ")


def test_fetch_mnist_failure_is_one_clear_line(monkeypatch, tmp_path, capsys):
    import kdlib.data.mnist as mnist

    def offline(folder):
        raise OSError("network is unreachable")

    monkeypatch.setattr(mnist, "fetch_mnist", offline)
    assert cli.main(["fetch-mnist", "--out", str(tmp_path)]) == 1
    assert "fetch-mnist: network is unreachable" in capsys.readouterr().err


def test_fetch_cifar10_reports_its_folder_or_one_clear_line(monkeypatch, tmp_path, capsys):
    import kdlib.data.cifar as cifar

    monkeypatch.setattr(cifar, "fetch_cifar10", lambda folder: folder)
    assert cli.main(["fetch-cifar10", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"CIFAR-10 (checked) in {tmp_path}" in out and f"KDLIB_CIFAR10={tmp_path}" in out

    def corrupted(folder):
        raise ValueError("the decoded x_test does not match its SHA-256")

    monkeypatch.setattr(cifar, "fetch_cifar10", corrupted)
    assert cli.main(["fetch-cifar10"]) == 1
    assert "fetch-cifar10: the decoded x_test" in capsys.readouterr().err


def test_only_runs_share_work_through_the_disk_unless_no_cache(monkeypatch, tmp_path):
    """Two experiments reading the same trained work: a second ``--only`` run (a new process,
    or a run resumed after an interruption) reuses it; ``--no-cache`` computes it again."""
    from kdlib.cache import shared_work

    trainings = []

    def shared(config):
        return shared_work("members", config, lambda: trainings.append(1) or 1.0)

    def check(result, claims):
        claims.close("value", predicted=1.0, measured=result.value, atol=1e-9)

    module = types.SimpleNamespace(
        CHAPTER="fake",
        TITLE="Fake",
        EXPERIMENTS=[
            Experiment(name, lambda c: _Result(shared(c)), check, None) for name in ("a", "b")
        ],
    )
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: {"fake": module}[c])
    argv = ["reproduce", "fake", "--out", str(tmp_path), "--device", "cpu", "--only"]
    assert cli.main([*argv, "a"]) == 0 and cli.main([*argv, "b"]) == 0
    assert len(trainings) == 1
    assert cli.main([*argv, "b", "--no-cache"]) == 0 and len(trainings) == 2


def test_device_script_explains_its_usage_and_keeps_to_its_budget(tmp_path):
    """tools/device_check.sh: a usage line without arguments; with no time left it starts no
    chapter and says so in times.tsv (the GPU path itself runs only on a lent machine)."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / "device_check.sh"
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode != 0 and "usage: bash tools/device_check.sh SECONDS" in usage.stderr
    env = {**os.environ, "OUT": str(tmp_path), "CHECKS": "0", "KDLIB_DEVICE": "cpu"}
    run = subprocess.run(
        ["bash", str(script), "3", "soft-labels:gradient"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    rows = (tmp_path / "times.tsv").read_text().splitlines()
    assert rows == [
        "chapter\tseconds\tstatus",
        "soft-labels:gradient\t0\tnot started: no time left",
    ]


def test_seed_study_reports_the_claims_that_fail_at_some_seed(monkeypatch, tmp_path, capsys):
    """``claims --seeds``: one run per seed, in its own folder; a claim that holds only at even
    seeds is listed with the seeds at which it held, and the exit status is 1."""
    seeds_seen = []

    def run(config):
        seeds_seen.append(config.seed)
        return _Result(float(config.seed % 2))

    def check(result, claims):
        claims.close("even seed", predicted=0.0, measured=result.value, atol=1e-9)
        with claims.observing():
            claims.at_most("small", measured=result.value, bound=0.5)

    module = types.SimpleNamespace(
        CHAPTER="fake", TITLE="Fake", EXPERIMENTS=[Experiment("only", run, check, None)]
    )
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: {"fake": module}[c])
    argv = ["claims", "--seeds", "0-2", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert seeds_seen == [0, 1, 2]
    assert "| fake | even seed | claim | 0, 1, 2 | 0, 2 |" in out
    assert "| fake | small | observation | 0, 1, 2 | 0, 2 |" in out
    assert "0 of 1 claims held at every seed" in out
    assert all((tmp_path / f"seed-{s}" / "quick" / "fake" / "claims.md").exists() for s in range(3))
    with pytest.raises(SystemExit):
        cli.main(["claims", "--seeds", "two", "--out", str(tmp_path)])
    assert "--seeds must be" in capsys.readouterr().err
