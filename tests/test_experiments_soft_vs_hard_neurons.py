"""The chapter's experiments at quick scale: each runs once, its claims pass, and a wrong
prediction makes a claim fail."""

import dataclasses

import numpy as np
import pytest
import torch
from book_session import sharing_chapter_results

from kdlib.claims import ClaimFailed, Claims
from kdlib.config import resolve
from kdlib.experiments import get_chapter
from kdlib.experiments import soft_vs_hard_neurons as chapter
from kdlib.models import TwoLayerReLU


@pytest.fixture(scope="module")
def config():
    return resolve("quick", "cpu", seed=0)


@pytest.fixture(scope="module")
def margins(config, pytestconfig):
    with sharing_chapter_results(pytestconfig):  # nbmake's run of the chapter stored it first
        return chapter.run_margins(config)


@pytest.fixture(scope="module")
def students(config, pytestconfig):
    with sharing_chapter_results(pytestconfig):  # nbmake's run of the chapter stored it first
        return chapter.run_students(config)


def _claims(config):
    return Claims(chapter.CHAPTER, config, ledger=False)


def test_chapter_is_registered():
    assert get_chapter("soft-vs-hard-neurons") is chapter
    assert [e.name for e in chapter.EXPERIMENTS] == [
        "margins",
        "accuracy",
        "neurons",
        "steps",
        "temperature",
        "deep",
    ]


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


@pytest.fixture(scope="module")
def softer(config, pytestconfig):
    with sharing_chapter_results(pytestconfig):  # nbmake's run of the chapter stored it first
        return chapter.run_temperature(config)


def test_temperature_claim_passes_and_observations_are_recorded(softer, config):
    claims = _claims(config)
    chapter.check_temperature(softer, claims)
    enforced = [r for r in claims.records if r.enforced]
    assert len(enforced) == 1 and enforced[0].passed
    assert sum(r.name.startswith("observation:") for r in claims.records) == 3
    kinds = 2 * len(chapter.TEMPERATURES) + 1
    assert softer.accuracy.shape == (kinds, len(softer.pairs), len(softer.widths), 32)
    assert np.all(softer.teacher_accuracy > 0.9)
    # the teacher's confidence falls with the temperature, towards 1/2
    assert np.all(np.diff(softer.confidence, axis=1) < 0) and np.all(softer.confidence > 0.5)


def test_a_student_beyond_the_distance_bound_fails(softer, config):
    far = softer.max_logit.copy()
    far[0, 0, 0, 0] = 1.01 * softer.distance[0, 0, 0, 0] + 1e-3
    with pytest.raises(ClaimFailed):
        chapter.check_temperature(dataclasses.replace(softer, max_logit=far), _claims(config))


def test_temperature_gains_and_summary_agree(softer):
    soft, hard = softer.kind("soft", 4.0), softer.kind("hard")
    smooth = softer.kind("smoothing", 4.0)
    gain = (softer.accuracy[soft] - softer.accuracy[hard]).mean(axis=1)
    np.testing.assert_allclose(softer.gain("soft", 4.0), gain)
    np.testing.assert_allclose(
        softer.gain("soft", 4.0, over="smoothing"),
        (softer.accuracy[soft] - softer.accuracy[smooth]).mean(axis=1),
    )
    row = chapter.temperature_summary(softer)["rows"][2]
    assert row["T"] == 4.0 and np.isclose(row["soft"], 100 * gain.mean())
    assert "T=4" in chapter.describe_temperature(softer)
    with pytest.raises(ValueError, match="label must be"):
        softer.kind("warm", 4.0)
    with pytest.raises(ValueError, match="temperature must be one of"):
        softer.kind("soft", 3.0)


def test_smoothed_labels_put_the_confidence_on_each_label():
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = chapter.smoothed_labels(labels, torch.tensor([0.8, 0.6]))
    torch.testing.assert_close(out, torch.tensor([[0.8, 0.2, 0.8], [0.4, 0.4, 0.6]]))


def test_paired_students_of_several_kinds_share_their_initial_weights():
    net = chapter.paired_students(2, 3, 4, 6, seed=0, device="cpu", kinds=5)
    hidden = net.hidden.detach().view(2, 5, 3, 6, 4)
    for k in range(1, 5):
        torch.testing.assert_close(hidden[:, k], hidden[:, 0], rtol=0, atol=0)


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


def test_full_scale_without_mnist_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("KDLIB_MNIST", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no fetched copy either
    with pytest.raises(FileNotFoundError, match="KDLIB_MNIST"):
        chapter.load_pair_tasks(resolve("full", "cpu"), pairs=[(3, 8)])


# -- the deep section (its quick run is exercised by the chapter's notebook) --------------------


def _deep_result(teacher_accuracy, soft_gain=0.0) -> chapter.DeepResult:
    rng = np.random.default_rng(0)
    hard = rng.uniform(0.3, 0.9, size=(3, 4, 5))  # (P, W, S)
    return chapter.DeepResult(
        dataset="fake",
        noise=np.array([0.0, 1.0, 2.0]),
        widths=np.array([1, 2, 4, 8]),
        teacher_channels=16,
        teacher_accuracy=np.asarray(teacher_accuracy, dtype=float),
        teacher_entropy=np.array([0.1, 0.4, 0.9]),
        test_accuracy=np.stack([hard + soft_gain, hard]),
        train_loss=np.stack([np.full((3, 4, 5), 0.5), np.full((3, 4, 5), 0.8)]),
        steps=10,
        batch_size=4,
        lr=0.1,
        n_train=40,
        n_test=20,
    )


def test_deep_check_fails_when_noise_does_not_make_the_task_harder(config):
    chapter.check_deep(_deep_result([0.9, 0.8, 0.5]), _claims(config))
    with pytest.raises(ClaimFailed, match="teacher's test accuracy falls"):
        chapter.check_deep(_deep_result([0.9, 0.92, 0.5]), _claims(config))


def test_deep_observations_follow_the_paired_gain(config):
    claims = _claims(config)
    chapter.check_deep(_deep_result([0.9, 0.8, 0.5], soft_gain=0.02), claims)
    verdicts = [r.verdict for r in claims.records]
    assert verdicts[0] == "pass" and verdicts[1] == "agrees"
    claims = _claims(config)
    chapter.check_deep(_deep_result([0.9, 0.8, 0.5], soft_gain=-0.02), claims)
    assert claims.records[1].verdict == "disagrees"
    np.testing.assert_allclose(chapter.deep_gain(_deep_result([1, 0, 0], 0.02)), 0.02)
    kl = chapter.deep_objectives(_deep_result([1, 0, 0]))[0]
    np.testing.assert_allclose(kl[:, 0, 0], 0.5 - np.array([0.1, 0.4, 0.9]))
    assert "sigma 2" in chapter.describe_deep(_deep_result([0.9, 0.8, 0.5]))


def _interrupting(fit, trained: list, interrupt: list):
    """``fit`` (a trainer called with ``desc=``) that records each ``desc`` it trains in
    ``trained`` and raises ``KeyboardInterrupt`` instead for those in ``interrupt``."""

    def recording(*args, desc, **kwargs):
        if desc in interrupt:
            raise KeyboardInterrupt
        trained.append(desc)
        return fit(*args, desc=desc, **kwargs)

    return recording


def test_an_interrupted_deep_run_resumes_at_the_width_it_was_training(
    config, tmp_path, monkeypatch, pytestconfig
):
    """Under ``reproduce`` the teacher and each width are cached as they finish: after an
    interruption, the rerun trains only what was unfinished, and its result equals a run that
    was never interrupted (the one nbmake's run of the chapter stored this session, when it ran
    first: another process)."""
    from kdlib.cache import shared_work_cache

    trained, interrupt = [], ["width 4"]
    monkeypatch.setattr(
        chapter, "_fit_images", _interrupting(chapter._fit_images, trained, interrupt)
    )
    with shared_work_cache(tmp_path, code="abc"), pytest.raises(KeyboardInterrupt):
        chapter.run_deep(config)
    assert trained == ["teacher", "width 1", "width 2"]
    interrupt.clear()
    with shared_work_cache(tmp_path, code="abc"):
        resumed = chapter.run_deep(config)
    assert trained[3:] == ["width 4"]
    with sharing_chapter_results(pytestconfig):  # the recording trainer changes no number
        uninterrupted = chapter.run_deep(config)
    for field in dataclasses.fields(resumed):
        np.testing.assert_array_equal(
            getattr(resumed, field.name), getattr(uninterrupted, field.name)
        )


def test_noisy_copies_are_seeded_and_exact_without_noise():
    x = torch.randn(6, 1, 4, 4)
    copies = chapter.noisy_copies(x, np.array([0.0, 1.0]), seed=3)
    assert copies.shape == (2, 6, 1, 4, 4)
    torch.testing.assert_close(copies[0], x)
    torch.testing.assert_close(copies, chapter.noisy_copies(x, np.array([0.0, 1.0]), seed=3))
    assert (copies[1] - x).std() > 0.5


def test_image_task_standardises_digits_and_reads_cifar_at_full_scale(tmp_path, monkeypatch):
    import pickle

    name, x_train, y_train, x_test, y_test = chapter.image_task(resolve("quick", "cpu"))
    assert name == "8x8 digits" and x_train.shape[1:] == (1, 8, 8)
    assert abs(float(x_train.mean())) < 1e-5 and abs(float(x_train.std()) - 1) < 1e-3
    rng = np.random.default_rng(0)
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [0, 1, 2]}
        (tmp_path / batch).write_bytes(pickle.dumps(data, protocol=2))
    monkeypatch.setenv("KDLIB_CIFAR10", str(tmp_path))
    name, x_train, y_train, x_test, _ = chapter.image_task(resolve("full", "cpu"))
    assert name == "CIFAR-10" and x_train.shape == (15, 3, 32, 32) and x_test.shape[0] == 3
    torch.testing.assert_close(x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_image_chunks_bound_memory_and_do_not_change_outputs(monkeypatch):
    from kdlib.models import ReplicaCNN

    model = ReplicaCNN(4, 1, 2, (8, 8), 10, input_groups=2, seed=0)
    assert chapter.image_chunk(model, budget_bytes=2 * 4 * 4 * 2 * 64 * 5) == 5
    assert chapter.image_chunk(model, budget_bytes=1) == 1
    x = torch.randn(2, 11, 1, 8, 8)
    whole = chapter._outputs(model, x)
    monkeypatch.setattr(chapter, "image_chunk", lambda m: 3)
    torch.testing.assert_close(chapter._outputs(model, x), whole)
    torch.testing.assert_close(whole, model(x).detach())


def test_pair_margins_in_groups_equal_one_batch():
    """The full scale solves the 45 margins a few tasks at a time (memory); the grouping must not
    change the estimates beyond the solver's tolerance."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(5, 20, 4, generator=gen, dtype=torch.float64)
    x = (x / x.norm(dim=-1, keepdim=True)).float()
    y = (x[..., 0] + 0.2 * x[..., 1] > 0).float()
    whole = chapter._pair_margins(x, y, "cpu")  # 5 tasks of 20 points: one group
    grouped = chapter._pair_margins(x, y, "cpu", budget=2 * 20 * 20)  # groups of 2, 2, 1
    np.testing.assert_allclose(grouped.gamma, whole.gamma, rtol=2e-4)
    assert grouped.weights.shape == whole.weights.shape == (5, 20)
    assert grouped.converged and whole.converged


def test_students_trained_in_task_groups_equal_one_batch(students, config, monkeypatch):
    """A device too small for one batched program trains a few tasks at a time (at full scale a
    width-1,024 step needs ~13 GB); the grouping must not change the results beyond rounding."""
    seen = []

    def two_tasks_at_a_time(tasks, per_task, device):
        seen.append(per_task)
        return 2

    monkeypatch.setattr(chapter, "auto_chunk_size", two_tasks_at_a_time)
    grouped = chapter._train_students.__wrapped__(config)  # uncached: runs again
    assert len(seen) == 1 + len(students.widths)  # the teachers, then every width
    assert seen[1] == chapter._STEP_BYTES * 2 * 32 * 160 * 2  # 2 x 32 replicas per task
    for name in ("avg_loss", "final_loss", "teacher_loss", "teacher_confidence"):
        np.testing.assert_allclose(getattr(grouped, name), getattr(students, name), atol=1e-6)
    np.testing.assert_array_equal(grouped.test_accuracy, students.test_accuracy)
    np.testing.assert_array_equal(grouped.agreement, students.agreement)


def test_task_groups_cover_the_tasks_in_order(monkeypatch):
    monkeypatch.setattr(chapter, "auto_chunk_size", lambda tasks, per_task, device: 3)
    groups = chapter._task_groups(8, 4, 10, 16, "cpu")
    assert groups == [slice(0, 3), slice(3, 6), slice(6, 8)]
    monkeypatch.undo()
    assert chapter._task_groups(8, 4, 10, 16, "cpu") == [slice(0, 8)]  # tiny: all at once


@pytest.fixture(scope="module")
def long_runs(config, pytestconfig):
    with sharing_chapter_results(pytestconfig):  # nbmake's run of the chapter stored it first
        return chapter.run_steps(config)


def test_steps_claims_pass_and_the_runs_are_recorded_whole(long_runs, config):
    claims = _claims(config)
    chapter.check_steps(long_runs, claims)
    assert [r.verdict for r in claims.records] == ["agrees", "pass", "agrees"]
    assert long_runs.loss.shape == (2, 5, 8, long_runs.steps + 1)
    # a run's average over its first T steps is the mean of the recorded losses 0 .. T-1
    np.testing.assert_allclose(
        long_runs.average_loss(10), long_runs.loss[..., :10].mean(-1), rtol=1e-12
    )
    with pytest.raises(ValueError, match="steps"):
        long_runs.average_loss(0)
    assert "runs are below ln(2)/n" in chapter.describe_steps(long_runs)


def test_interrupted_long_runs_resume_at_the_width_they_were_training(
    long_runs, config, tmp_path, monkeypatch
):
    """Under ``reproduce`` each width of the long runs is cached as it finishes (16,000 steps
    per width at full scale): the rerun after an interruption trains only the unfinished width,
    and equals a run that was never interrupted (the ``long_runs`` fixture, no cache)."""
    from kdlib.cache import shared_work_cache

    trained, interrupt = [], ["width 32"]
    monkeypatch.setattr(chapter, "train", _interrupting(chapter.train, trained, interrupt))
    with shared_work_cache(tmp_path, code="abc"), pytest.raises(KeyboardInterrupt):
        chapter.run_steps(config)
    assert set(trained) == {"width 4"}
    before, interrupt[:] = len(trained), []
    with shared_work_cache(tmp_path, code="abc"):
        resumed = chapter.run_steps(config)
    assert set(trained[before:]) == {"width 32"}
    for field in dataclasses.fields(resumed):
        np.testing.assert_array_equal(getattr(resumed, field.name), getattr(long_runs, field.name))


def test_a_loss_decaying_like_one_over_root_t_fails_the_rate_claim(long_runs, config):
    t = np.arange(long_runs.steps + 1, dtype=float)
    slow = 1e-3 * np.sqrt(long_runs.steps / np.maximum(t, 1.0))  # below ln2/n from mid-run on
    fake = dataclasses.replace(long_runs, loss=np.broadcast_to(slow, long_runs.loss.shape))
    slopes, separated = chapter.late_slopes(fake)
    assert separated.all() and np.allclose(slopes, -0.5)
    with pytest.raises(ClaimFailed, match="slope of the hard-label loss"):
        chapter.check_steps(fake, _claims(config))


def test_without_a_run_below_the_threshold_the_rate_is_not_claimed(long_runs, config):
    stuck = dataclasses.replace(long_runs, loss=np.full(long_runs.loss.shape, 0.3))
    claims = _claims(config)
    chapter.check_steps(stuck, claims)  # nothing to enforce: the theorem does not apply
    assert [(r.verdict, r.name.split(":")[0]) for r in claims.records] == [
        ("disagrees", "observation"),
        ("disagrees", "observation"),
    ]
    assert "rate is not tested" in chapter.describe_steps(stuck)
