"""Reliability: property-based input checks, numerical edge cases, determinism, chunking and
interrupted runs (issue: reliability)."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlib import losses
from kdlib.models import DeepLinearStudent, LinearStudent, ReplicaCNN, TwoLayerReLU
from kdlib.train import auto_chunk_size, slice_replicas, train, train_chunked

ROOT = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=40, deadline=None)


# -- property-based: valid input never gives NaN/inf, invalid input always raises ------------------

logit_scale = st.sampled_from([1e-3, 1.0, 30.0, 1e4])
temperatures = st.floats(min_value=1e-3, max_value=1e3)
dtypes = st.sampled_from([torch.float32, torch.float64])


def _logits(seed, shape, scale, dtype):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


@FAST
@given(
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(2, 7),
    logit_scale,
    temperatures,
    st.floats(0, 1),
    dtypes,
)
def test_valid_inputs_give_finite_losses_and_gradients(
    seed, r, n, k, scale, temperature, alpha, dtype
):
    student = _logits(seed, (r, n, k), scale, dtype).requires_grad_(True)
    teacher = _logits(seed + 1, (n, k), scale, dtype)
    labels = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    total = losses.distillation_loss(student, labels, teacher, temperature, alpha)
    total = total + losses.kd_loss(student, teacher, temperature)
    total = total + losses.soft_cross_entropy(
        student, torch.softmax(teacher.double(), -1).to(dtype)
    )
    total = total + losses.binary_cross_entropy(student[..., :1], torch.sigmoid(teacher[:, 0]))
    (grad,) = torch.autograd.grad(total.sum(), student)
    assert torch.isfinite(total).all() and torch.isfinite(grad).all()


@FAST
@given(st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan)))
def test_invalid_temperatures_always_raise(temperature):
    z = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="temperature"):
        losses.kd_loss(z, z[0], temperature)


@FAST
@given(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9), st.just(math.nan)))
def test_invalid_alpha_always_raises(alpha):
    z = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="alpha"):
        losses.distillation_loss(z, torch.zeros(2, dtype=torch.long), z[0], 1.0, alpha)


@FAST
@given(st.integers(-5, -1) | st.integers(3, 9))
def test_out_of_range_labels_always_raise(label):
    with pytest.raises(ValueError, match="labels"):
        losses.cross_entropy(torch.zeros(1, 2, 3), torch.tensor([0, label]))


def _valid_for_two_replicas_of_3_features(shape: list[int]) -> bool:
    """``(n, 3)`` (shared by the replicas) or ``(2, n, 3)`` (one batch per replica)."""
    return shape[-1] == 3 and (len(shape) == 2 or (len(shape) == 3 and shape[0] == 2))


@FAST
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=4).filter(
        lambda s: not _valid_for_two_replicas_of_3_features(s)
    )
)
def test_wrong_input_shape_always_raises(shape):
    with pytest.raises(ValueError, match="x "):
        TwoLayerReLU(2, 3, 4)(torch.zeros(*shape))


@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3)])
def test_both_input_layouts_are_accepted(shape):
    assert TwoLayerReLU(2, 3, 4)(torch.zeros(*shape)).shape[:2] == (2, 5)  # (R, n, outputs)


@FAST
@given(st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_targets_raise(bad):
    z = torch.zeros(1, 2, 3)
    target = torch.full((2, 3), 1 / 3)
    target[0, 0] = bad
    with pytest.raises(ValueError, match="NaN"):
        losses.soft_cross_entropy(z, target)
    with pytest.raises(ValueError, match="NaN"):
        losses.kd_loss(z, target, 1.0)


def test_empty_data_raises():
    with pytest.raises(ValueError):
        LinearStudent(2, 3)(torch.zeros(0, 4))
    from kdlib.claims import Claims

    with pytest.raises(ValueError, match="empty"):
        Claims("x", ledger=False).close("e", [], [])


# -- numerical edge cases: extreme temperatures and huge logits vs a 50-digit reference ------------


def _reference_kd(student, teacher, temperature):
    """T^2 KL(softmax(t/T) || softmax(s/T)) per sample in 50-digit arithmetic, averaged."""
    mpmath.mp.dps = 50
    total = mpmath.mpf(0)
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        a = [mpmath.mpf(v) / temperature for v in t_row]
        b = [mpmath.mpf(v) / temperature for v in s_row]
        la, lb = (
            mpmath.log(sum(mpmath.exp(v) for v in a)),
            mpmath.log(sum(mpmath.exp(v) for v in b)),
        )
        total += sum(mpmath.exp(x - la) * ((x - la) - (y - lb)) for x, y in zip(a, b, strict=True))
    return float(total / len(student) * mpmath.mpf(temperature) ** 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1e-3, 1e-1, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("scale", [3.0, 1e4])
def test_kd_loss_matches_high_precision_reference(dtype, temperature, scale):
    student = _logits(1, (6, 5), scale, dtype)
    teacher = _logits(2, (6, 5), scale, dtype)
    reference = _reference_kd(
        student.double(), teacher.double(), temperature
    )  # same rounded inputs
    value = losses.kd_loss(student[None], teacher, temperature)[0].item()
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    assert value == pytest.approx(reference, rel=rtol, abs=1e-30)


def test_kd_loss_high_temperature_float32_has_no_cancellation():
    """The textbook formula loses ~1% at T=1000 in float32; kdlib's stays at float32 accuracy."""
    student, teacher = (
        _logits(3, (20, 10), 3.0, torch.float32),
        _logits(4, (20, 10), 3.0, torch.float32),
    )
    reference = _reference_kd(student.double(), teacher.double(), 1e3)
    value = losses.kd_loss(student[None], teacher, 1e3)[0].item()
    assert abs(value - reference) / reference < 1e-5


# -- determinism, replicas, chunking ----------------------------------------------------------


def _train_once(seed):
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(seed))
    y = torch.sigmoid(x[:, 0] - x[:, 1])
    model = TwoLayerReLU(8, 5, 32, seed=seed, bias=True)
    result = train(model, lambda m, _: losses.binary_cross_entropy(m(x), y), 50, 0.5)
    return model.hidden.detach().clone(), result.loss


def test_same_seed_gives_identical_numbers_on_cpu():
    (w1, l1), (w2, l2) = _train_once(3), _train_once(3)
    assert torch.equal(w1, w2) and torch.equal(l1, l2)
    assert not torch.equal(w1, _train_once(4)[0])


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_results_do_not_depend_on_chunking(chunk_size):
    x = torch.randn(8, 30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = (x[..., 0] > 0).double()
    lrs = torch.linspace(0.1, 1.0, 8, dtype=torch.float64)
    whole = DeepLinearStudent(8, 4, depth=2, width=6, seed=0, dtype=torch.float64)
    chunked = DeepLinearStudent(8, 4, depth=2, width=6, seed=0, dtype=torch.float64)
    train(whole, lambda m, _: losses.binary_cross_entropy(m(x), y), 40, lrs)
    result = train_chunked(
        chunked,
        lambda m, _, part: losses.binary_cross_entropy(m(x[part]), y[part]),
        40,
        lrs,
        chunk_size=chunk_size,
    )
    assert torch.allclose(whole.end_to_end(), chunked.end_to_end(), rtol=0, atol=1e-13)
    assert result.loss.shape == (41, 8)


def test_a_slice_of_replicas_trains_like_those_replicas_of_the_whole():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 12, 3, generator=gen), torch.rand(5, 12, generator=gen)
    whole = TwoLayerReLU(5, 3, 8, symmetric_init=True, seed=2, dtype=torch.float64)
    part = slice_replicas(whole, 1, 4)
    assert part.replicas == 3 and part.hidden.shape == (3, 8, 3)
    assert not part.output.requires_grad and part.hidden.requires_grad
    torch.testing.assert_close(part.hidden, whole.hidden[1:4])
    part.hidden.data.zero_()  # a copy: the whole model is not changed
    assert whole.hidden.abs().sum() > 0
    part = slice_replicas(whole, 1, 4)
    xd = x.double()

    def loss(m, _, rows=slice(None)):
        return losses.binary_cross_entropy(m(xd[rows])[..., 0], y.double()[rows])

    train(whole, loss, 30, 0.5)
    train(part, lambda m, b: loss(m, b, slice(1, 4)), 30, 0.5)
    torch.testing.assert_close(part.hidden, whole.hidden[1:4], rtol=0, atol=1e-12)
    for start, stop in ((2, 2), (-1, 3), (0, 6)):
        with pytest.raises(ValueError, match="start < stop"):
            slice_replicas(whole, start, stop)


def test_auto_chunk_size_respects_memory():
    cpu = torch.device("cpu")
    assert auto_chunk_size(100, 1, cpu) == 100
    assert auto_chunk_size(100, 10**15, cpu) == 1
    with pytest.raises(ValueError, match="bytes_per_replica"):
        auto_chunk_size(10, 0, cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu_within_documented_tolerance():
    """GPU tolerance (README): float32 results agree with the CPU to 1e-4 relative."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    y = torch.sigmoid(x[:, 0])
    runs = []
    for device in ("cpu", "cuda"):
        model = TwoLayerReLU(16, 8, 64, seed=0, device=device)
        xd, yd = x.to(device), y.to(device)

        def loss_fn(m, _, xd=xd, yd=yd):
            return losses.binary_cross_entropy(m(xd), yd)

        train(model, loss_fn, 100, 0.5)
        runs.append(model.hidden.detach().cpu())
    assert torch.allclose(runs[0], runs[1], rtol=1e-4, atol=1e-5)


def _cnn_weights_after_training(device: str) -> torch.Tensor:
    """Every weight of 4 small CNN replicas (two image sets) after 20 full-batch steps."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 3, 8, 8, generator=gen)  # (image sets, n, C, H, W)
    y = torch.randint(0, 10, (32,), generator=gen)
    model = ReplicaCNN(4, 3, 8, (8, 8), 10, pool=2, input_groups=2, seed=0, device=device)
    xd, yd = x.to(device), y.to(device)
    train(model, lambda m, _: losses.cross_entropy(m(xd), yd), 20, 0.05)
    return torch.cat([p.detach().cpu().flatten() for p in model.parameters()])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_convolutions_match_cpu_within_documented_tolerance():
    """Chapter 4's deep section on a GPU: cuDNN convolutions in float32 (TF32 off, see
    kdlib.config.exact_float32) agree with the CPU like the matrix products do."""
    import kdlib

    kdlib.resolve(device="cuda")  # what every chapter does first
    cpu, cuda = _cnn_weights_after_training("cpu"), _cnn_weights_after_training("cuda")
    assert torch.allclose(cpu, cuda, rtol=1e-4, atol=1e-5)


def test_mixed_devices_are_a_clear_error():
    model = LinearStudent(2, 3)
    x = torch.zeros(4, 3, device="meta")
    with pytest.raises(ValueError, match="x is on meta but the model is on cpu"):
        model(x)
    with pytest.raises(ValueError, match="teacher_logits is on meta but the logits are on cpu"):
        losses.kd_loss(torch.zeros(1, 4, 3), torch.zeros(4, 3, device="meta"), 1.0)


# -- interrupted and corrupted reproduction runs ----------------------------------------------


FAKE_CHAPTER = """
import os, time
from kdlib.experiments import Experiment

CHAPTER = "resumable"
TITLE = "A chapter whose last experiment is slow"


def quick(config):
    return 1.0


def slow(config):
    time.sleep(float(os.environ.get("FAKE_SLOW_SECONDS", "0")))
    return 2.0


def check(result, claims):
    claims.at_least("positive", result, 0.0)


EXPERIMENTS = [Experiment("first", quick, check), Experiment("second", quick, check),
               Experiment("slow", slow, check)]
"""


def test_killed_reproduction_resumes_without_losing_finished_work(tmp_path):
    """Kill `reproduce` while its last experiment runs; a rerun reuses the finished ones."""
    (tmp_path / "fake_resumable.py").write_text(FAKE_CHAPTER)
    out = tmp_path / "results"
    command = [
        sys.executable,
        "-m",
        "kdlib",
        "reproduce",
        "resumable",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    env = dict(
        os.environ,
        KDLIB_SCALE="quick",
        KDLIB_EXTRA_CHAPTERS="fake_resumable",
        PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        FAKE_SLOW_SECONDS="120",
    )
    cache = out / "quick" / "resumable" / "cache"
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache.glob("second-*.pkl")):
        time.sleep(0.1)
    assert list(cache.glob("second-*.pkl")), "the first experiments never finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(cache.glob("slow-*.pkl")), "killed too late to test resuming"
    env["FAKE_SLOW_SECONDS"] = "0"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert "resumable/first: cached" in output and "resumable/second: cached" in output
    assert "resumable/slow: cached" not in output
    assert "3 passed, 0 failed" in rerun.stdout
    assert not list(cache.glob("*.tmp*")), "a partial file was left behind"


def test_corrupted_cache_is_recomputed_by_reproduce(tmp_path, monkeypatch):
    import kdlib.__main__ as cli
    from kdlib.experiments import Experiment

    calls = []
    module = type(
        "M",
        (),
        {
            "CHAPTER": "fake",
            "TITLE": "F",
            "EXPERIMENTS": [Experiment("e", lambda c: calls.append(1) or 1.0, lambda r, c: None)],
        },
    )
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: module)
    args = ["reproduce", "fake", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(args) == 0
    (cached,) = (tmp_path / "quick" / "fake" / "cache").glob("e-*.pkl")
    cached.write_bytes(cached.read_bytes()[:-3])  # truncate
    with pytest.warns(UserWarning, match="corrupted"):
        assert cli.main(args) == 0
    assert len(calls) == 2


def test_ctrl_c_inside_training_is_not_cached(tmp_path, monkeypatch):
    import kdlib.__main__ as cli
    from kdlib.experiments import Experiment

    def run(config):
        model = LinearStudent(1, 2)

        def loss_fn(m, _):
            raise KeyboardInterrupt

        train(model, loss_fn, 10, 0.1)
        return 1.0

    module = type(
        "M",
        (),
        {"CHAPTER": "fake", "TITLE": "F", "EXPERIMENTS": [Experiment("e", run, lambda r, c: None)]},
    )
    monkeypatch.setattr(cli, "chapters", lambda: {"fake": module})
    monkeypatch.setattr(cli, "get_chapter", lambda c: module)
    assert cli.main(["reproduce", "fake", "--out", str(tmp_path), "--device", "cpu"]) == 130
    assert not list((tmp_path / "quick" / "fake").glob("cache/*.pkl"))
