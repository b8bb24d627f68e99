"""The label-averaging chapter's experiments at quick scale: claims pass, and fail when fed a
wrong prediction; the batched Newton solver agrees with kdlib's gradient descent."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from book_session import sharing_chapter_results

from kdlib import resolve
from kdlib.claims import ClaimFailed, Claims
from kdlib.data import label_noise as noise
from kdlib.experiments import label_averaging as chapter
from kdlib.losses import soft_cross_entropy
from kdlib.models import LinearStudent
from kdlib.theory import label_averaging as theory
from kdlib.train import train

F64 = torch.float64


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


@pytest.mark.parametrize("name", [e.name for e in chapter.EXPERIMENTS])
def test_claims_pass_at_quick_scale(results, config, name):
    exp = next(e for e in chapter.EXPERIMENTS if e.name == name)
    claims = _claims(config)
    exp.check(results[name], claims)
    enforced = [r for r in claims.records if r.enforced]
    assert enforced and all(r.passed for r in enforced)
    fig = exp.plot(results[name])
    assert fig.axes


def test_module_conventions():
    assert chapter.CHAPTER == "label-averaging" and chapter.ORDER == 60
    assert [e.name for e in chapter.EXPERIMENTS] == [
        "closed_form",
        "many_rounds",
        "label_noise",
        "pll",
        "digits",
    ]


def test_wrong_minimum_rounds_fails(results, config):
    wrong = copy.deepcopy(results["label_noise"])
    wrong.tau_star = wrong.tau_star + 1
    with pytest.raises(ClaimFailed):
        chapter.check_label_noise(wrong, _claims(config))


def test_wrong_noise_threshold_fails(results, config):
    wrong = dataclasses.replace(results["pll"], threshold=results["pll"].threshold - 0.15)
    with pytest.raises(ClaimFailed):
        chapter.check_pll(wrong, _claims(config))


def test_a_later_trained_crossover_fails_only_the_crossover_claim(results, config):
    """Trained SD at 100% up to eta = 0.5 would move the crossover past the linearised one."""
    wrong = copy.deepcopy(results["pll"])
    wrong.trained_sd[wrong.etas <= 0.5] = 1.0
    claims = Claims(chapter.CHAPTER, config, ledger=False, raise_on_fail=False)
    chapter.check_pll(wrong, claims)
    failed = {r.name for r in claims.records if r.enforced and not r.passed}
    assert any(name.startswith("crossover: trained PLL") for name in failed)


def test_wrong_exact_dynamics_fail(results, config):
    wrong = copy.deepcopy(results["many_rounds"])
    wrong.exact_acc = np.roll(wrong.exact_acc, 3, axis=1)
    with pytest.raises(ClaimFailed):
        chapter.check_many_rounds(wrong, _claims(config))


def test_digits_findings_are_observations_that_report_disagreement(results, config):
    """The paper's Fig. 2 findings on real features are observations: a PLL student that loses
    is reported as 'disagrees', never raised; the CE student of the paper's text disagrees."""
    claims = _claims(config)
    chapter.check_digits(results["digits"], claims)
    observed = [r for r in claims.records if not r.enforced]
    ce = [r for r in observed if "paper text" in r.name]
    assert observed and ce and all(r.verdict == "disagrees" for r in ce)  # as the chapter says
    wrong = dataclasses.replace(results["digits"], pll_gce_test=results["digits"].pll_gce_test * 0)
    claims = _claims(config)
    chapter.check_digits(wrong, claims)
    gce = [r for r in claims.records if "GCE" in r.name]
    assert gce and all(r.verdict == "disagrees" for r in gce)


def test_wrong_digits_best_round_fails(results, config):
    wrong = copy.deepcopy(results["digits"])
    wrong.closed_test = np.roll(wrong.closed_test, 4, axis=-1)  # closed form's peak 4 rounds late
    with pytest.raises(ClaimFailed):
        chapter.check_digits(wrong, _claims(config))


def test_paired_shortfall_by_hand(results):
    # one noise rate, two seeds, three rounds, four test points
    correct = np.zeros((1, 2, 3, 4), dtype=bool)
    correct[0, :, 0] = [[1, 1, 1, 0], [1, 1, 0, 0]]  # round 0: 5 of 8
    correct[0, :, 2] = [[1, 1, 0, 1], [1, 0, 0, 0]]  # round 2: 4 of 8, 3 discordant pairs
    hand = dataclasses.replace(results["digits"], sd_test_correct=correct)
    shortfall, tol = chapter._paired_shortfall(hand, 0, 0, 2)
    assert shortfall == pytest.approx(1 / 8)
    assert tol == pytest.approx(3 * np.sqrt(3) / 8)  # 3 sqrt(discordant) / N
    assert chapter._paired_shortfall(hand, 0, 1, 1) == (0.0, 1 / 8)  # identical rounds: 1 / N


def test_wrong_averaging_weights_fail(results, config):
    """Rounds counted from the first student (M^t instead of M^(t+1)): the measured weights
    disagree with it."""
    wrong = copy.deepcopy(results["closed_form"])
    spectrum = theory.GramSpectrum.from_gram(torch.from_numpy(wrong.heat_gram))
    wrong.heat_weights = np.stack(
        [
            theory.averaging_weights(spectrum, wrong.heat_lam, 4, max(int(t), 1)).numpy()
            for t in wrong.heat_rounds
        ]
    )
    with pytest.raises(ClaimFailed):
        chapter.check_closed_form(wrong, _claims(config))


def test_wrong_turning_round_of_the_closed_form_fails(results, config):
    wrong = copy.deepcopy(results["many_rounds"])
    wrong.linear_acc = np.roll(wrong.linear_acc, 3, axis=1)
    with pytest.raises(ClaimFailed):
        chapter.check_many_rounds(wrong, _claims(config))


def test_measured_averaging_weights_match_the_closed_form_at_large_lam():
    kappa = noise.block_kappa(3, 0.5, 0.1)
    feats = noise.class_structured_features([3, 3, 2], kappa)
    measured, tol = chapter.measure_averaging_weights(feats, 0.5, 3, 2, epsilon=1e-3)
    spectrum = theory.GramSpectrum.from_features(feats)
    for t in range(3):
        expected = theory.averaging_weights(spectrum, 0.5, 3, t + 1)
        assert (measured[t] - expected).abs().max() <= tol[t]
        assert tol[t] < 1e-6


def test_closed_form_with_n_lam_instead_of_k_n_lam_fails(config, monkeypatch):
    """Pitfall: forgetting the softmax Jacobian's 1/K in M = G (G + K N lam)^-1."""
    original = theory.shrinkage

    def wrong(eigenvalues, lam, n_classes):
        return original(eigenvalues, lam / n_classes, n_classes)

    monkeypatch.setattr(theory, "shrinkage", wrong)
    result = chapter.run_closed_form(config)
    with pytest.raises(ClaimFailed):
        chapter.check_closed_form(result, _claims(config))


def test_newton_solver_matches_kdlib_gradient_descent():
    kappa = noise.block_kappa(3, 0.4, 0.1)
    feats = noise.class_structured_features([4, 4, 4], kappa)
    true = noise.class_labels([4, 4, 4])
    targets = torch.nn.functional.one_hot((true + (torch.arange(12) % 4 == 0)) % 3, 3).to(F64)
    lam = 1.0  # well conditioned: GD converges linearly at rate about 1 - lr * lam
    fit = chapter.fit_heads(feats, targets[None], lam)
    student = LinearStudent(1, feats.shape[1], 3, dtype=F64)
    with chapter.single_thread(torch.device("cpu")):
        train(
            student,
            lambda m, _: soft_cross_entropy(m(feats), targets, check=False),
            400,
            lr=0.5,
            weight_decay=lam,
        )
    torch.testing.assert_close(student.weight.detach(), fit.weights, atol=1e-6, rtol=0)
    assert fit.grad_norm.max() < 1e-10


def test_batched_newton_equals_separate_runs():
    kappa = noise.hierarchical_kappa([0, 0, 1], 0.5, 0.3, 0.1)
    feats = noise.class_structured_features([5, 3, 4], kappa)
    gen = torch.Generator().manual_seed(0)
    targets = torch.softmax(3 * torch.randn(3, 12, 3, generator=gen, dtype=F64), -1)
    lams = torch.tensor([1e-3, 1e-2, 1e-1], dtype=F64)
    batched = chapter.fit_heads(feats, targets, lams)
    for r in range(3):
        alone = chapter.fit_heads(feats, targets[r : r + 1], float(lams[r]))
        torch.testing.assert_close(batched.probs[r], alone.probs[0], atol=1e-10, rtol=0)


def test_turning_round_helper():
    assert chapter._turning_round(np.array([0.7, 1.0, 1.0, 0.8, 0.8])) == 2
    assert chapter._turning_round(np.array([0.7, 0.9, 1.0])) == 2
    assert chapter._turning_round(np.array([1.0, 0.5])) == 0
