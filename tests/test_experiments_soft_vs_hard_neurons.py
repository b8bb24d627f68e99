"""The chapter's experiments at quick scale: each runs once, its claims pass, and a wrong
prediction makes a claim fail."""

import dataclasses

import numpy as np
import pytest
import torch

from kdlib.claims import ClaimFailed, Claims
from kdlib.config import resolve
from kdlib.experiments import get_chapter
from kdlib.experiments import soft_vs_hard_neurons as chapter
from kdlib.models import TwoLayerReLU


@pytest.fixture(scope="module")
def config():
    return resolve("quick", "cpu", seed=0)


@pytest.fixture(scope="module")
def margins(config):
    return chapter.run_margins(config)


@pytest.fixture(scope="module")
def students(config):
    return chapter.run_students(config)


def _claims(config):
    return Claims(chapter.CHAPTER, config, ledger=False)


def test_chapter_is_registered():
    assert get_chapter("soft-vs-hard-neurons") is chapter
    assert [e.name for e in chapter.EXPERIMENTS] == ["margins", "accuracy", "neurons"]


def test_margins_claims_pass(margins, config):
    claims = _claims(config)
    chapter.check_margins(margins, claims)
    assert all(r.passed for r in claims.records)
    assert len(margins.pairs) == 45 and margins.converged
    assert np.all(margins.lower <= margins.gamma) and np.all(margins.gamma <= margins.upper)


def test_neurons_claims_pass(students, config):
    claims = _claims(config)
    chapter.check_neurons(students, claims)
    enforced = [r for r in claims.records if r.enforced]
    assert len(enforced) == len(students.pairs) + 4
    assert all(r.passed for r in enforced)


def test_accuracy_check_records_the_paper_observation_without_raising(students, config):
    claims = _claims(config)
    chapter.check_accuracy(students, claims)
    names = [r.name for r in claims.records]
    assert len(names) == 2 and all(name.startswith("observation:") for name in names)
    assert not any(r.enforced for r in claims.records)


def test_students_result_shapes_and_ranges(students):
    kinds, tasks, widths, seeds = students.avg_loss.shape
    assert kinds == 2 and widths == len(students.widths) and tasks == len(students.pairs)
    assert np.all(np.diff(students.gamma) < 0)  # easiest task first
    assert np.all((students.test_accuracy >= 0) & (students.test_accuracy <= 1))
    assert np.all(students.avg_loss > -1e-6)  # KL and logistic losses are non-negative
    assert np.all(students.teacher_accuracy > 0.9)
    assert np.all((students.teacher_confidence > 0.5) & (students.teacher_confidence < 1))
    assert students.agreement.shape == (tasks, widths, seeds)
    assert np.all((students.agreement >= 0) & (students.agreement <= 1))


def test_paired_students_share_their_initial_weights():
    net = chapter.paired_students(tasks=3, seeds=4, in_features=5, width=6, seed=0, device="cpu")
    hidden = net.hidden.detach().view(3, 2, 4, 6, 5)
    output = net.output.detach().view(3, 2, 4, 6, 1)
    torch.testing.assert_close(hidden[:, 0], hidden[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(output[:, 0], output[:, 1], rtol=0, atol=0)
    assert not torch.equal(hidden[:, 0, 0], hidden[:, 0, 1])  # seeds differ
    assert not torch.equal(hidden[0, 0], hidden[1, 0])  # tasks differ


def test_accuracy_summary_matches_the_paired_differences(students):
    summary = chapter.accuracy_summary(students)
    small = slice(0, len(students.widths) // 2)
    diff = students.test_accuracy[0][:, small] - students.test_accuracy[1][:, small]
    assert summary["gap"] == pytest.approx(diff.mean())
    assert summary["gap_low"] <= summary["gap"] <= summary["gap_high"]
    np.testing.assert_allclose(summary["gain"], diff.mean(axis=(1, 2)))
    assert summary["small_widths"] == [int(w) for w in students.widths[small]]
    assert 0 <= summary["agreement"] <= 1


def test_quick_tasks_test_on_every_other_image_of_the_pair(config):
    tasks = chapter.load_pair_tasks(config, pairs=[(3, 8), (1, 7)])
    for p in range(2):
        train = {tuple(row.tolist()) for row in tasks.x_train[p]}
        test = {tuple(row.tolist()) for row in tasks.x_test[p]}
        assert not train & test  # disjoint (no image appears twice in the digits)
    n, n_test = tasks.x_train.shape[1], tasks.x_test.shape[1]
    assert 150 <= n <= 160 and n + n_test >= 340  # about 350 images per pair in all
    assert set(tasks.y_train.unique().tolist()) == {0.0, 1.0}


def test_a_wrong_neuron_ordering_fails(students, config):
    swapped = dataclasses.replace(
        students, avg_loss=students.avg_loss[::-1].copy()
    )  # hard runs labelled soft and vice versa
    with pytest.raises(ClaimFailed):
        chapter.check_neurons(swapped, _claims(config))


def test_a_wrong_margin_prediction_fails(margins, config):
    wrong = dataclasses.replace(margins, gamma=margins.gamma * 1.5)
    with pytest.raises(ClaimFailed):
        chapter.check_margins(wrong, _claims(config))


def test_width_needed_interpolates_and_censors():
    widths = np.array([2, 4, 8, 16])
    assert chapter.width_needed(widths, np.array([0.4, 0.2, 0.1, 0.05]), 0.2) == 4
    assert chapter.width_needed(widths, np.array([0.4, 0.1, 0.1, 0.1]), 0.5) == 2
    between = chapter.width_needed(widths, np.array([0.4, 0.1, 0.05, 0.05]), 0.2)
    assert between == pytest.approx(2 * 2**0.5)  # geometric midpoint on a log-log line
    assert chapter.width_needed(widths, np.array([0.4, 0.3, 0.3, 0.3]), 0.2) == float("inf")
    # a lucky small width does not count: the loss must stay below eps from there on
    assert chapter.width_needed(widths, np.array([0.1, 0.3, 0.1, 0.1]), 0.2) > 4


def test_task_batched_logits_equal_the_model_on_each_task():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, generator=gen)  # 3 tasks
    model = TwoLayerReLU(3 * 4, 5, 6, seed=1)  # 4 replicas per task
    batched = chapter._logits(model, x, groups=4)
    reference = model(x.repeat_interleave(4, dim=0))[..., 0]
    torch.testing.assert_close(batched, reference)


def test_full_scale_reads_mnist_pairs_from_disk(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(1, 256, size=(300, 28, 28), dtype=np.uint8),
        "y_train": np.arange(300) % 10,
        "x_test": rng.integers(1, 256, size=(100, 28, 28), dtype=np.uint8),
        "y_test": np.arange(100) % 10,
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    monkeypatch.setenv("KDLIB_MNIST", str(tmp_path / "mnist.npz"))
    tasks = chapter.load_pair_tasks(resolve("full", "cpu"), pairs=[(3, 8), (4, 9)])
    assert tasks.x_train.shape == (2, 60, 784) and tasks.x_test.shape == (2, 20, 784)
    torch.testing.assert_close(tasks.x_train.norm(dim=-1), torch.ones(2, 60), rtol=1e-5, atol=1e-5)


def test_full_scale_without_mnist_raises_a_clear_error(monkeypatch):
    monkeypatch.delenv("KDLIB_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match="KDLIB_MNIST"):
        chapter.load_pair_tasks(resolve("full", "cpu"), pairs=[(3, 8)])
