"""The chapter "Privileged information in the kernel regime" at quick scale: every claim passes,
claims fail when fed a wrong prediction, and the hand-written gradient of the wide student is
autograd's."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from book_session import sharing_chapter_results

from kdlib.claims import ClaimFailed, Claims
from kdlib.config import resolve
from kdlib.experiments import privileged_information as chapter
from kdlib.models import TwoLayerReLU


@pytest.fixture(scope="module")
def config():
    return resolve("quick", "cpu")


@pytest.fixture(scope="module")
def results(config, pytestconfig):
    """Every experiment at quick scale (the results nbmake's run of the chapter stored, when it
    ran first this session)."""
    with sharing_chapter_results(pytestconfig):
        return {exp.name: exp.run(config) for exp in chapter.EXPERIMENTS}


def _claims(config):
    return Claims(chapter.CHAPTER, config, ledger=False)


@pytest.mark.parametrize("name", ["dynamics", "convergence", "generalization"])
def test_claims_pass_at_quick_scale(results, config, name):
    experiment = next(e for e in chapter.EXPERIMENTS if e.name == name)
    claims = _claims(config)
    experiment.check(results[name], claims)
    assert claims.records and all(r.passed for r in claims.records)
    fig = experiment.plot(results[name])
    assert fig.axes


def test_summary_table_gives_predicted_and_measured(results):
    table = chapter.summary_table(
        results["dynamics"], results["convergence"], results["generalization"]
    )
    lines = table.splitlines()
    assert lines[0] == "| quantity | predicted (kernel) | measured (network) |"
    assert sum("iterations to" in line for line in lines) == 4
    assert sum("digits test error" in line for line in lines) == 4
    for line in lines[2:]:
        assert all(cell.strip() for cell in line.strip("|").split("|"))


def test_dynamics_claims_fail_on_a_wrong_prediction(results, config):
    wrong = dataclasses.replace(
        results["dynamics"],
        err_data_predicted=results["dynamics"].err_data_predicted + 0.3,
    )
    with pytest.raises(ClaimFailed, match="RMS training error"):
        chapter.check_dynamics(wrong, _claims(config))


def test_dynamics_claims_fail_when_the_asymptote_is_wrong(results, config):
    r = results["dynamics"]
    wrong = dataclasses.replace(r, asymptotic_data=r.asymptotic_data[::-1].copy())
    with pytest.raises(ClaimFailed, match="converged interpolation"):
        chapter.check_dynamics(wrong, _claims(config))


def test_convergence_claims_fail_on_a_swapped_prediction(results, config):
    r = results["convergence"]
    swapped = r.iters_predicted[:, ::-1].copy()  # predicts labels faster than PI
    with pytest.raises(ClaimFailed, match="kernel prediction, full capacity"):
        chapter.check_convergence(dataclasses.replace(r, iters_predicted=swapped), _claims(config))


def test_convergence_slope_claim_fails_for_a_wrong_rate(results, config):
    r = results["convergence"]
    widths = r.widths.astype(float)
    scale = (widths / widths[0])[:, None, None, None] ** -0.5  # makes the slope about -1
    wrong = dataclasses.replace(r, distance=r.distance * scale)
    with pytest.raises(ClaimFailed, match="m\\^\\{-1/2\\}"):
        chapter.check_convergence(wrong, _claims(config))


def test_generalization_claims_fail_when_pi_hurts_against_the_kernel_prediction(results, config):
    r = results["generalization"]
    reversed_error = r.test_error_measured[:, ::-1].copy()
    with pytest.raises(ClaimFailed, match="in the order the kernel model predicts"):
        chapter.check_generalization(
            dataclasses.replace(r, test_error_measured=reversed_error), _claims(config)
        )


def test_a_gap_the_kernel_model_does_not_predict_fails(results, config):
    """Where the kernel's PI and labels errors tie, the networks may not show a resolvable gap."""
    r = results["generalization"]
    predicted = r.test_correct_predicted.copy()
    predicted[0, -1] = predicted[0, 0]  # clean labels: the kernel model predicts a tie
    measured = r.test_correct_measured.copy()
    measured[0, -1] = False  # the PI networks misclassify every test digit
    wrong = dataclasses.replace(r, test_correct_predicted=predicted, test_correct_measured=measured)
    with pytest.raises(ClaimFailed, match="no resolvable difference"):
        chapter.check_generalization(wrong, _claims(config))


def test_paired_error_gap_by_hand():
    correct = np.zeros((2, 1, 4), dtype=bool)  # (rho, seed, test point)
    correct[0, 0] = [1, 1, 0, 0]  # labels only: error 1/2
    correct[1, 0] = [1, 1, 1, 0]  # PI: error 1/4, one discordant point
    gap, tol = chapter._paired_error_gap(correct)
    assert gap == pytest.approx(-0.25) and tol == pytest.approx(3 / 4)


def test_pi_hurting_as_the_kernel_predicts_is_an_observation_not_a_failure(results, config):
    """What the full scale found with clean labels: the kernel model predicts PI slightly worse,
    the networks agree; the claim holds and the paper's expectation is a disagreeing
    observation."""
    r = results["generalization"]
    both_reversed = dataclasses.replace(
        r,
        test_error_measured=r.test_error_measured[:, ::-1].copy(),
        test_error_predicted=r.test_error_predicted[:, ::-1].copy(),
        test_correct_measured=r.test_correct_measured[:, ::-1].copy(),
        test_correct_predicted=r.test_correct_predicted[:, ::-1].copy(),
    )
    claims = _claims(config)
    chapter.check_generalization(both_reversed, claims)
    observed = [c for c in claims.records if c.name.startswith("observation: label noise")]
    assert len(observed) == len(r.noise) and all(c.verdict == "disagrees" for c in observed)


def test_tracking_claim_fails_when_the_bound_is_violated(results, config):
    r = results["dynamics"]
    with pytest.raises(ClaimFailed, match="kernel-tracking bound"):
        chapter.check_dynamics(dataclasses.replace(r, bound=r.bound * 0.1), _claims(config))


def test_interpolation_claim_fails_for_a_prediction_linear_in_rho(results, config):
    r = results["dynamics"]
    wrong = dataclasses.replace(r, asymptotic_data=r.rhos * r.gap)  # rho instead of rho^2
    with pytest.raises(ClaimFailed, match="converged interpolation"):
        chapter.check_dynamics(wrong, _claims(config))


def test_hypothesis_claim_fails_when_the_step_is_too_large(results, config):
    r = results["dynamics"]
    with pytest.raises(ClaimFailed, match="hypothesis of the tracking bound"):
        chapter.check_dynamics(dataclasses.replace(r, step_gain=2.5), _claims(config))


def test_convergence_claim_fails_when_pi_is_slower_at_one_width(results, config):
    r = results["convergence"]
    measured = r.iters_measured.copy()
    measured[0] = measured[0, :, ::-1]  # narrowest width: PI slower than labels
    with pytest.raises(ClaimFailed, match="every width and capacity"):
        chapter.check_convergence(dataclasses.replace(r, iters_measured=measured), _claims(config))


def test_convergence_claim_fails_when_students_do_not_approach_the_kernel(results, config):
    r = results["convergence"]
    wrong = dataclasses.replace(r, iters_predicted=r.iters_measured[0].copy())
    with pytest.raises(ClaimFailed, match="approach the kernel's iterations"):
        chapter.check_convergence(wrong, _claims(config))


def test_recorded_bound_terms_match_an_independent_computation():
    """The drift terms and step remainders recorded with Jacobian-vector products equal those
    computed from the full empirical NTK at every step (float64, small network)."""
    from kdlib.ntk import empirical_ntk
    from kdlib.theory import privileged_information as th

    gen = torch.Generator().manual_seed(9)
    replicas, n, d, width, steps = 2, 9, 4, 64, 12
    x = torch.randn(replicas, n, d, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    target = torch.randn(replicas, n, generator=gen, dtype=torch.float64)
    lr = torch.tensor([2.0, 3.0], dtype=torch.float64)
    model = TwoLayerReLU(replicas, d, width, seed=4, dtype=torch.float64)
    reference = TwoLayerReLU(replicas, d, width, seed=4, dtype=torch.float64)
    traj = chapter.train_wide_student(model, x, target, lr, steps, kernel_every=1)
    grams = []
    for step in range(steps + 1):  # replay the run, measuring the whole kernel each step
        grams.append(empirical_ntk(reference, x))
        if step < steps:
            u = reference(x)[..., 0]
            reference.hidden.data -= (
                lr[:, None, None]
                * chapter._vjp(
                    x,
                    (reference.features(x) > 0) * reference.output[..., 0][:, None, :] / width**0.5,
                    ((u - target) / n)[..., None],
                )[:, :, 0]
            )
    torch.testing.assert_close(reference.hidden.data, model.hidden.data)
    u = traj.outputs
    for j in range(replicas):
        lin = th.kernel_outputs(grams[0][j], target[j], range(steps + 1), float(lr[j]), u[0, j])
        for s in range(steps):
            step_lin = u[s, j] - lr[j] / n * grams[s][j] @ (u[s, j] - target[j])
            torch.testing.assert_close(traj.remainders[s, j], (u[s + 1, j] - step_lin).norm())
            drift = lr[j] / n * ((grams[s][j] - grams[0][j]) @ (lin[s] - target[j])).norm()
            torch.testing.assert_close(traj.drift_terms[s, j], drift)
    assert traj.remainders.max() > 0  # some neurons did flip: the remainder term is exercised


def test_hand_written_gradient_is_autograds():
    gen = torch.Generator().manual_seed(0)
    replicas, n, d, width = 3, 7, 4, 16
    x = torch.randn(replicas, n, d, generator=gen, dtype=torch.float64)
    target = torch.randn(replicas, n, generator=gen, dtype=torch.float64)
    lr = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    model = TwoLayerReLU(replicas, d, width, seed=1, dtype=torch.float64)
    start = model.hidden.detach().clone()
    loss = (0.5 * ((model(x)[..., 0] - target) ** 2).mean(-1)).sum()
    (grad,) = torch.autograd.grad(loss, model.hidden)
    chapter.train_wide_student(model, x, target, lr, steps=1)
    torch.testing.assert_close(model.hidden.detach(), start - lr[:, None, None] * grad)


def test_batched_students_equal_separate_runs():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    lr = torch.tensor([0.5, 1.0], dtype=torch.float64)
    batched = TwoLayerReLU(2, 3, 32, symmetric_init=True, seed=3, dtype=torch.float64)
    weights = batched.hidden.detach().clone()
    out = chapter.train_wide_student(batched, x, target, lr, steps=20).outputs
    for r in range(2):
        single = TwoLayerReLU(1, 3, 32, symmetric_init=True, seed=3, dtype=torch.float64)
        single.hidden.data.copy_(weights[r : r + 1])
        single.output.data.copy_(batched.output.data[r : r + 1])
        alone = chapter.train_wide_student(
            single, x[r : r + 1], target[r : r + 1], lr[r : r + 1], 20
        )
        torch.testing.assert_close(alone.outputs[:, 0], out[:, r])


def test_replica_chunks_give_the_same_trajectory():
    """A step handles replicas in chunks (memory budget); one replica at a time must record the
    same trajectory as all at once."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 7, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    lr = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)

    def run(chunk=None):
        model = TwoLayerReLU(3, 4, 64, symmetric_init=True, seed=2, dtype=torch.float64)
        return chapter.train_wide_student(
            model, x, target, lr, 15, kernel_every=5, x_test=x, chunk=chunk
        )

    assert chapter._replica_chunk(512 * 32768, torch.device("cpu")) == 1  # full scale
    assert chapter._replica_chunk(96 * 512, torch.device("cpu")) >= 50  # quick: all at once
    whole = run()
    chunked = run(chunk=1)
    for field in ("outputs", "drift_terms", "remainders", "kernel_drift", "distance"):
        torch.testing.assert_close(getattr(chunked, field), getattr(whole, field))


def test_wide_student_tracks_the_kernel_and_its_bound():
    from kdlib.theory import privileged_information as th

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    target = torch.sign(torch.randn(12, generator=gen, dtype=torch.float64))[None]
    gram = th.gram_matrix(x)
    lr = th.stable_learning_rate(gram)
    model = TwoLayerReLU(1, 5, 8192, symmetric_init=True, seed=6, dtype=torch.float64)
    traj = chapter.train_wide_student(
        model, x[None], target, torch.tensor([lr], dtype=torch.float64), steps=40
    )
    predicted = th.kernel_outputs(gram, target, np.arange(41), lr)  # (41, 1, 12)
    bound, _ = chapter.kernel_tracking_bound(traj, target, torch.tensor([lr]), predicted)
    deviation = (traj.outputs - predicted).norm(dim=-1)
    assert torch.all(deviation <= bound + 1e-9)
    assert deviation.max() / target.norm() < 5 / math.sqrt(8192)  # O(m^{-1/2}) tracking


def test_train_wide_student_validates():
    model = TwoLayerReLU(2, 3, 4, bias=True)
    with pytest.raises(ValueError, match="no bias"):
        chapter.train_wide_student(model, torch.zeros(2, 5, 3), torch.zeros(2, 5), torch.ones(2), 1)
    model = TwoLayerReLU(2, 3, 4)
    with pytest.raises(ValueError, match="target"):
        chapter.train_wide_student(model, torch.zeros(2, 5, 3), torch.zeros(5), torch.ones(2), 1)
    with pytest.raises(ValueError, match="steps"):
        chapter.train_wide_student(model, torch.zeros(2, 5, 3), torch.zeros(2, 5), torch.ones(2), 0)
    with pytest.raises(ValueError, match="chunk"):
        chapter.train_wide_student(
            model, torch.zeros(2, 5, 3), torch.zeros(2, 5), torch.ones(2), 1, chunk=0
        )
