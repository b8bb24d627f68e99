"""Training checkpoints: a run stopped mid-training resumes at its saved step and gives the
numbers of an uninterrupted run (bitwise, on the CPU); checkpoints live only while the result that
needs them is not stored; ``SIGTERM`` under ``reproduce`` saves them like ``Ctrl-C``."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdlib.cache import ResultCache, TrainingCheckpoint, shared_work_cache, training_checkpoint
from kdlib.losses import binary_cross_entropy
from kdlib.models import TwoLayerReLU
from kdlib.train import interrupts_propagate, train

STEPS = 40


def _problem():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(24, 5, generator=g)
    y = (x[:, 0] > 0).float()
    return x, y


class _InterruptInBackward(torch.autograd.Function):
    """Identity whose backward pass raises ``KeyboardInterrupt`` (a Ctrl-C during the gradient,
    after the step's loss was recorded)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise KeyboardInterrupt


def _run(
    checkpoint,
    sgd: bool,
    stop_at: int | None = None,
    signal_at: int | None = None,
    backward_stop_at: int | None = None,
):
    """Train a fresh model (same init every time); raise ``KeyboardInterrupt`` before the update
    of step ``stop_at`` (a loss evaluation counts as that step) or in the gradient of step
    ``backward_stop_at``, or let a signal arrive (as the handler ``reproduce`` installs would
    defer it) during the update of step ``signal_at``."""
    import kdlib.train as kdtrain

    x, y = _problem()
    model = TwoLayerReLU(3, 5, 6, train_second_layer=True, seed=1)
    calls = []

    def loss_fn(m, batch):
        calls.append(batch)
        if stop_at is not None and len(calls) == stop_at + 1:
            raise KeyboardInterrupt
        if signal_at is not None and len(calls) == signal_at + 1:
            kdtrain._UPDATE["interrupt_pending"] = True
        rows = slice(None) if batch is None else batch
        loss = binary_cross_entropy(m(x[rows]), y[rows], check=False)
        if backward_stop_at is not None and len(calls) == backward_stop_at + 1:
            return _InterruptInBackward.apply(loss)
        return loss

    sgd_args = dict(batch_size=8, n_samples=24, generator=torch.Generator().manual_seed(5))
    result = train(
        model,
        loss_fn,
        STEPS,
        0.5,
        record_every=3,
        metrics_fn=lambda m: {"norm": m.hidden.pow(2).sum(dim=(1, 2))},
        checkpoint=checkpoint,
        **(sgd_args if sgd else {}),
    )
    return model, result, calls


@pytest.mark.parametrize("sgd", [False, True], ids=["full-batch", "sgd"])
@pytest.mark.parametrize("stop_at", [1, 17, STEPS - 1])
def test_a_stopped_run_resumes_at_its_step_and_matches_an_uninterrupted_one(tmp_path, sgd, stop_at):
    reference_model, reference, _ = _run(None, sgd)
    checkpoint = TrainingCheckpoint(ResultCache(tmp_path), "run", "k", every_seconds=1e9)
    with pytest.raises(KeyboardInterrupt), interrupts_propagate():
        _run(checkpoint, sgd, stop_at=stop_at)
    assert checkpoint.load()["done"] == stop_at  # saved when interrupted, not only when due

    model, result, calls = _run(checkpoint, sgd)
    assert len(calls) == STEPS - stop_at + 1  # only the remaining steps, and the final loss
    assert result.steps_done == STEPS and not result.interrupted
    assert (result.steps == reference.steps).all()
    assert torch.equal(result.loss, reference.loss)
    assert torch.equal(result.metrics["norm"], reference.metrics["norm"])
    for ours, theirs in zip(model.parameters(), reference_model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("sgd", [False, True], ids=["full-batch", "sgd"])
def test_a_run_stopped_in_the_gradient_of_a_recorded_step_records_it_once(tmp_path, sgd):
    """Step 3 is recorded (every 3 steps) before its gradient; the saved state leaves that record
    out, so the resumed run does not list step 3 twice."""
    reference_model, reference, _ = _run(None, sgd)
    checkpoint = TrainingCheckpoint(ResultCache(tmp_path), "run", "k", every_seconds=1e9)
    with pytest.raises(KeyboardInterrupt), interrupts_propagate():
        _run(checkpoint, sgd, backward_stop_at=3)
    saved = checkpoint.load()
    assert saved["done"] == 3 and saved["recorded_steps"] == [0]
    model, result, _ = _run(checkpoint, sgd)
    assert (result.steps == reference.steps).all()
    assert torch.equal(result.loss, reference.loss)
    assert torch.equal(result.metrics["norm"], reference.metrics["norm"])
    assert torch.equal(model.hidden, reference_model.hidden)


def test_a_finished_run_is_not_trained_again(tmp_path):
    checkpoint = TrainingCheckpoint(ResultCache(tmp_path), "run", "k")
    first_model, first, _ = _run(checkpoint, sgd=False)
    assert checkpoint.load()["done"] == STEPS  # kept until the result that needs it is stored
    model, again, calls = _run(checkpoint, sgd=False)
    assert len(calls) == 1  # the final loss only
    assert torch.equal(again.loss, first.loss)
    assert torch.equal(model.hidden, first_model.hidden)


def test_checkpoints_are_saved_while_training_when_due(tmp_path):
    checkpoint = TrainingCheckpoint(ResultCache(tmp_path), "run", "k", every_seconds=0)
    saved = []
    original = checkpoint.save
    checkpoint.save = lambda state: saved.append(state["done"]) or original(state)
    _run(checkpoint, sgd=False)
    assert saved == list(range(1, STEPS + 1))  # every step (due at once), then the finished run


def test_a_checkpoint_of_another_length_is_refused(tmp_path):
    checkpoint = TrainingCheckpoint(ResultCache(tmp_path), "run", "k")
    _run(checkpoint, sgd=False)
    model = TwoLayerReLU(3, 5, 6, seed=1)
    x, y = _problem()
    with pytest.raises(ValueError, match="40 steps, not 10"):
        train(model, lambda m, _: binary_cross_entropy(m(x), y), 10, 0.5, checkpoint=checkpoint)


@pytest.mark.parametrize(
    ("every", "error"), [(-1.0, ValueError), (float("nan"), ValueError), ("60", TypeError)]
)
def test_bad_checkpoint_intervals_are_rejected(tmp_path, every, error):
    with pytest.raises(error, match="every_seconds"):
        TrainingCheckpoint(ResultCache(tmp_path), "run", "k", every_seconds=every)


def test_train_rejects_a_checkpoint_of_the_wrong_type(tmp_path):
    x, y = _problem()
    model = TwoLayerReLU(1, 5, 2)
    with pytest.raises(TypeError, match="checkpoint must be"):
        train(model, lambda m, _: binary_cross_entropy(m(x), y), 2, 0.1, checkpoint=tmp_path)


def test_checkpoints_live_until_the_result_that_needs_them_is_stored(tmp_path):
    assert training_checkpoint("run", 1) is None  # no cache active (a notebook): none written
    cache = ResultCache(tmp_path)
    with shared_work_cache(tmp_path, "code"):

        def compute(stop_at=None):
            checkpoint = training_checkpoint("run", ("inputs", 1))
            _, result, _ = _run(checkpoint, sgd=False, stop_at=stop_at)
            return result.final_loss

        with pytest.raises(KeyboardInterrupt), interrupts_propagate():
            cache.get_or_run("result", "k", lambda: compute(stop_at=9))
        (kept,) = tmp_path.glob("checkpoint-run-*.pkl")  # the stopped run's state is kept
        assert TrainingCheckpoint(cache, "run", kept.stem.split("-")[-1]).load()["done"] == 9

        result, hit = cache.get_or_run("result", "k", compute)
        assert not hit and not list(tmp_path.glob("checkpoint-*"))  # stored: checkpoint removed
        assert training_checkpoint("run", ("other", 1)).path != kept  # inputs are in the key


_LONG_DISTILLATION = """
import dataclasses, sys
from kdlib.experiments import multi_view as mv
mv.QUICK = dataclasses.replace(
    mv.QUICK, steps=5, kd_steps=10**7, n_train=60, n_test=100, members=2, students=2
)
from kdlib.__main__ import main
sys.exit(main(["reproduce", "multi-view", "--only", "distillation", "--device", "cpu",
               "--out", sys.argv[1]]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_reproduce_run_saves_its_training_checkpoint(tmp_path, sig):
    """End to end: ``reproduce`` killed by a signal mid-training (an endless distillation) exits
    with 130 and leaves an exact checkpoint of the steps it finished."""
    folder = tmp_path / "quick" / "multi-view" / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDLIB_SCALE": "quick"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _LONG_DISTILLATION, str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob("shared-members-*.pkl")):  # the members are done
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(1.0)  # well into the distillation
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    (saved,) = folder.glob("checkpoint-distilled-students-*.pkl")
    key = saved.stem.rsplit("-", 1)[1]
    state = TrainingCheckpoint(ResultCache(folder), "distilled-students", key).load()
    assert state["done"] > 0 and state["steps"] == 10**7


def test_sigterm_under_reproduce_raises_keyboard_interrupt():
    from kdlib.__main__ import _terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), _terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode
        for _ in range(1000):
            pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_during_a_weight_update_stops_training_right_after_it(tmp_path):
    """The handler ``reproduce`` installs defers a signal that arrives while weights are being
    updated; training stops right after that update, and the checkpoint is exact."""
    import kdlib.train as kdtrain

    kdtrain._UPDATE["running"] = True
    try:
        kdtrain.interrupt_between_updates(signal.SIGTERM)  # no raise: the update finishes first
        assert kdtrain._UPDATE["interrupt_pending"]
    finally:
        kdtrain._UPDATE.update(running=False, interrupt_pending=False)
    with pytest.raises(KeyboardInterrupt):
        kdtrain.interrupt_between_updates(signal.SIGTERM)  # between updates: at once

    reference_model, reference, _ = _run(None, sgd=True)
    checkpoint = TrainingCheckpoint(ResultCache(tmp_path), "run", "k", every_seconds=1e9)
    with pytest.raises(KeyboardInterrupt), interrupts_propagate():
        _run(checkpoint, sgd=True, signal_at=7)  # a signal during the update of step 7 (the 8th)
    assert checkpoint.load()["done"] == 8  # the 8th update finished, then training stopped
    model, result, _ = _run(checkpoint, sgd=True)
    assert torch.equal(result.loss, reference.loss)
    assert torch.equal(result.metrics["norm"], reference.metrics["norm"])
    assert torch.equal(model.hidden, reference_model.hidden)
