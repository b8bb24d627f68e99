"""Closed forms of Jeong & Chung (label averaging, PLL) against independent references: explicit
matrix algebra, hand-solvable instances, a generic optimiser, and the exact stationarity
condition."""

from __future__ import annotations

import math
import time

import pytest
import torch

from kdlib.data import label_noise as noise
from kdlib.theory import label_averaging as la

F64 = torch.float64


def _block(k=4, n=10, c=0.4, d=0.1):
    kappa = noise.block_kappa(k, c, d)
    true = noise.class_labels([n] * k)
    gram = noise.class_structured_gram([n] * k, kappa)
    return kappa, true, gram


def _flip_pattern(true, n, k, per_class):
    """Flip the first points of every class: ``per_class[s]`` points to class ``j + 1 + s``."""
    given = true.clone()
    for j in range(k):
        start = j * n
        for s, m in enumerate(per_class):
            given[start : start + m] = (j + 1 + s) % k
            start += m
    return given


def test_closed_form_equals_iterating_the_explicit_averaging_matrix():
    _, true, gram = _block()
    rng = torch.Generator().manual_seed(0)
    given = torch.randint(0, 4, true.shape, generator=rng)
    lam, k, n = 0.01, 4, gram.shape[0]
    m = torch.linalg.solve(
        gram + k * n * lam * torch.eye(n, dtype=F64), gram
    )  # G (G + KN lam)^-1, symmetric
    y = torch.nn.functional.one_hot(given, k).double()
    p, expected = y.clone(), []
    for _ in range(6):
        p = 1 / k + m @ (p - 1 / k)
        expected.append(p)
    got = la.sd_outputs(given, la.GramSpectrum.from_gram(gram), lam, 5, n_classes=k)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-12, rtol=0)


def test_linear_step_solves_the_linearised_stationarity_condition():
    """P = 1/K + (T - P) G / (K N lam): the softmax linearised at zero logits."""
    _, _, gram = _block(k=3, n=5)
    t = torch.softmax(torch.randn(15, 3, dtype=F64, generator=torch.Generator().manual_seed(1)), -1)
    lam = 0.2
    p = la.linear_step(t, la.GramSpectrum.from_gram(gram), lam)
    rhs = 1 / 3 + gram @ (t - p) / (3 * 15 * lam)
    torch.testing.assert_close(p, rhs, atol=1e-13, rtol=0)
    torch.testing.assert_close(p.sum(-1), torch.ones(15, dtype=F64), atol=1e-13, rtol=0)


def test_two_round_weights_of_a_three_point_example_by_hand():
    """The chapter's exercise: G = [[1, a, 0], [a, 1, 0], [0, 0, 1]], K = 2, N = 3."""
    a, lam = 0.5, 0.1
    gram = torch.tensor([[1.0, a, 0.0], [a, 1.0, 0.0], [0.0, 0.0, 1.0]])
    big = 2 * 3 * lam  # K N lam
    # eigenpairs: (1+a, (1,1,0)/sqrt2), (1-a, (1,-1,0)/sqrt2), (1, e3)
    s_plus, s_minus, s_one = (1 + a) / (1 + a + big), (1 - a) / (1 - a + big), 1 / (1 + big)
    by_hand = torch.tensor(
        [
            [(s_plus**2 + s_minus**2) / 2, (s_plus**2 - s_minus**2) / 2, 0.0],
            [(s_plus**2 - s_minus**2) / 2, (s_plus**2 + s_minus**2) / 2, 0.0],
            [0.0, 0.0, s_one**2],
        ],
        dtype=F64,
    )
    got = la.averaging_weights(la.GramSpectrum.from_gram(gram), lam, 2, applications=2)
    torch.testing.assert_close(got, by_hand, atol=1e-14, rtol=0)


def test_block_eigenvalues_and_multiplicities():
    k, n, c, d = 4, 6, 0.45, 0.15
    _, _, gram = _block(k, n, c, d)
    mu = torch.linalg.eigvalsh(gram)
    mu0, mu1, mu2 = la.block_gram_eigenvalues(k, n, c, d)
    expected = torch.tensor([mu0] * (k * n - k) + [mu1] * (k - 1) + [mu2], dtype=F64)
    torch.testing.assert_close(mu, expected, atol=1e-12, rtol=0)


def test_three_scale_block_formula_equals_full_closed_form():
    k, n, c, d = 4, 10, 0.4, 0.1
    _, true, gram = _block(k, n, c, d)
    given = _flip_pattern(true, n, k, [2, 1, 1])
    q = noise.label_fractions(true, given, k)
    full = la.sd_outputs(given, la.GramSpectrum.from_gram(gram), 3e-3, 8, n_classes=k)
    block = la.block_sd_outputs(q, n, c, d, 3e-3, 8)
    torch.testing.assert_close(full, block[:, true, given], atol=1e-12, rtol=0)


def test_type_reduction_equals_block_formula_and_superclass_closed_form():
    k, n, c, d = 4, 10, 0.4, 0.1
    kappa, true, _ = _block(k, n, c, d)
    given = _flip_pattern(true, n, k, [2, 1, 1])
    counts = noise.type_counts(true, given, k)
    types = la.type_linear_outputs(kappa, counts, 3e-3, 5).view(6, k, k, k)
    block = la.block_sd_outputs(counts / n, n, c, d, 3e-3, 5)
    torch.testing.assert_close(types, block, atol=1e-12, rtol=0)
    # superclasses and unequal sizes: against the full N-point closed form
    sizes = [8, 4, 8, 4]
    kap = noise.hierarchical_kappa([0, 0, 1, 1], 0.5, 0.3, 0.1)
    true = noise.class_labels(sizes)
    given = noise.corrupt_labels_exact(true, noise.symmetric_transition(4, 0.25))
    counts = noise.type_counts(true, given, 4)
    full = la.sd_outputs(
        given,
        la.GramSpectrum.from_gram(noise.class_structured_gram(sizes, kap)),
        0.01,
        4,
        n_classes=4,
    )
    types = la.type_linear_outputs(kap, counts, 0.01, 4)
    torch.testing.assert_close(full, types[:, true * 4 + given], atol=1e-12, rtol=0)


def test_minimum_rounds_on_the_brief_example_and_against_a_scan():
    """K=4, n=10, c=0.4, d=0.1, 4/10 flipped per class (2 to the next class, 1 to each other):
    Delta = 0.4; with lam = 3e-3, s1/s0 = 1.588, log(3.5)/log(1.588) = 2.71, tau* = 3."""
    k, n, c, d, lam = 4, 10, 0.4, 0.1, 3e-3
    _, true, _ = _block(k, n, c, d)
    q = noise.label_fractions(true, _flip_pattern(true, n, k, [2, 1, 1]), k)
    assert la.minimum_rounds(q, n, c, d, lam) == 3
    margins = la.block_margins(q, n, c, d, lam, 10)
    assert int(torch.nonzero(margins > 0)[0]) == 3 - 1  # round index = tau* - 1
    assert (margins[2:] > 0).all()  # stays correct
    for lam_ in (1e-4, 3e-4, 1e-3, 1e-2):
        tau = la.minimum_rounds(q, n, c, d, lam_)
        first = int(torch.nonzero(la.block_margins(q, n, c, d, lam_, 80) > 0)[0])
        assert first == tau - 1


def test_minimum_rounds_grows_as_lam_shrinks_and_noise_grows():
    k, n, c, d = 4, 30, 0.4, 0.1

    def tau(eta, lam):
        return la.minimum_rounds(noise.symmetric_transition(k, eta), n, c, d, lam)

    assert tau(0.5, 1e-4) >= tau(0.5, 1e-3) >= tau(0.5, 1e-2)
    assert tau(0.2, 1e-3) <= tau(0.5, 1e-3) <= tau(0.7, 1e-3)
    assert math.isinf(tau(0.76, 1e-3))  # beyond (K-1)/K = 0.75


def test_noise_threshold_matches_minimum_rounds_on_both_sides():
    k, n, c, d, lam, rounds = 4, 30, 0.4, 0.1, 3e-4, 6
    eta_t = la.noise_threshold(rounds, k, n, c, d, lam)
    assert 0 < eta_t < 0.75
    below = la.minimum_rounds(noise.symmetric_transition(k, eta_t - 1e-6), n, c, d, lam)
    above = la.minimum_rounds(noise.symmetric_transition(k, eta_t + 1e-6), n, c, d, lam)
    assert below <= rounds + 1 < above


def test_corruption_condition_by_hand():
    q = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.6, 0.0], [0.5, 0.1, 0.4]])
    assert la.corruption_condition(q).tolist() == [True, True, False]


def _cyclic(shares):
    """Label fractions with row j = shares shifted by j (balanced, and so are refined targets)."""
    return torch.stack([torch.tensor(shares, dtype=F64).roll(j) for j in range(len(shares))])


def test_pll_condition_by_hand():
    k, n, c, d = 4, 40, 0.4, 0.1
    q = _cyclic([0.5, 0.25, 0.15, 0.1])  # m_j = j + 1; x = 0.1 for j + 2, 0.15 for j + 3
    ratio = {
        lam: (lambda s: s[1] / s[0])(la._block_shrinkage(k, n, c, d, lam))
        for lam in (1e-4, 1e-2, 0.1)
    }
    # label j + 2 stays above m_j while s1/s0 < (1 + 0.1) / 0.1 = 11
    for lam, r in ratio.items():
        assert la.pll_condition(q, n, c, d, lam).tolist() == [r < 11] * k
    assert ratio[1e-4] < 11 < ratio[0.1]
    # a single wrong label: every refined pair is {j, m_j}, a tie for the PLL student
    assert not la.pll_condition(_cyclic([0.7, 0.3, 0.0, 0.0]), n, c, d, 1e-4).any()
    # no unique most frequent wrong label
    assert not la.pll_condition(_cyclic([0.5, 0.2, 0.2, 0.1]), n, c, d, 1e-4).any()


def test_pll_condition_refuses_unbalanced_labels():
    q = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.6, 0.0], [0.5, 0.1, 0.4]])
    with pytest.raises(ValueError, match="balanced label frequencies"):
        la.pll_condition(q, 10, 0.4, 0.1, 1e-3)


def test_pll_condition_matches_the_linearised_student_over_lambda_and_noise():
    """Exact on the type-level linearised dynamics, including where a strongly regularised
    teacher forgets the points' own labels and the PLL student ties (large lambda)."""
    k, n, c, d = 4, 40, 0.4, 0.1
    kappa = noise.block_kappa(k, c, d)
    true = noise.class_labels([n] * k)
    outcomes = set()
    for lam in (1e-4, 1e-2, 3e-2, 0.1):
        for eta in (0.2, 0.4, 0.6, 0.7):
            given = noise.corrupt_labels_exact(
                true, noise.cyclic_transition(k, eta, (0.5, 0.25, 0.25))
            )
            counts = noise.type_counts(true, given, k)
            teacher = la.type_linear_outputs(kappa, counts, lam, [0])[0]
            student = la.type_linear_outputs(
                kappa, counts, lam, [0], targets=la.pll_targets(teacher)
            )
            full = bool(la.type_accuracy(student, counts)[0] >= 1 - 1e-12)
            assert bool(la.pll_condition(counts / n, n, c, d, lam).all()) == full, (lam, eta)
            outcomes.add((lam < 1e-3, full))
    # the condition is not vacuous: at the larger lambdas it both holds and fails
    assert {(True, True), (False, False), (False, True)} <= outcomes


def test_pll_targets_keep_the_two_largest_with_first_index_on_ties():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.45, 0.45], [0.25, 0.25, 0.5]])
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], dtype=F64)
    torch.testing.assert_close(la.pll_targets(p), expected)


def test_pll_reaches_full_accuracy_where_multi_round_sd_cannot():
    k, n, c, d, lam = 4, 40, 0.4, 0.1, 1e-4
    kappa = noise.block_kappa(k, c, d)
    true = noise.class_labels([n] * k)
    given = noise.corrupt_labels_exact(true, noise.cyclic_transition(k, 0.5, (0.5, 0.25, 0.25)))
    counts = noise.type_counts(true, given, k)
    sd = la.type_linear_outputs(kappa, counts, lam, 10)
    pll = la.type_linear_outputs(kappa, counts, lam, [0], targets=la.pll_targets(sd[0]))
    assert la.type_accuracy(sd, counts).max() < 1
    assert la.type_accuracy(pll, counts)[0] == 1


def _solve_directly(features, targets, lam, iters=400):
    """Independent reference: torch L-BFGS on the primal objective (no kdlib code)."""
    w = torch.zeros(features.shape[1], targets.shape[1], dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1,
        max_iter=iters,
        tolerance_grad=1e-14,
        tolerance_change=0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = (
            -(targets * torch.log_softmax(features @ w, -1)).sum(-1).mean()
            + 0.5 * lam * (w**2).sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def test_fixed_point_and_representer_form_at_the_minimiser():
    k, n = 3, 4
    kappa = noise.block_kappa(k, 0.5, 0.1)
    feats = noise.class_structured_features([n] * k, kappa)
    true = noise.class_labels([n] * k)
    y = torch.nn.functional.one_hot(_flip_pattern(true, n, k, [1]), k).double()
    lam = 0.05
    w = _solve_directly(feats, y, lam)
    p = torch.softmax(feats @ w, -1)
    assert la.fixed_point_residual(p, y, feats @ feats.T, lam).abs().max() < 1e-6
    torch.testing.assert_close(la.representer_weights(p, y, feats, lam), w, atol=1e-6, rtol=0)


def test_exact_type_dynamics_satisfy_the_full_stationarity_condition():
    k, n, lam = 4, 6, 2e-3
    kappa = noise.hierarchical_kappa([0, 0, 1, 1], 0.5, 0.3, 0.1)
    true = noise.class_labels([n] * k)
    given = _flip_pattern(true, n, k, [1, 1])
    counts = noise.type_counts(true, given, k)
    out = la.type_exact_outputs(kappa, counts, lam, 3)  # rounds 0..3
    gram = noise.class_structured_gram([n] * k, kappa)
    targets = torch.nn.functional.one_hot(given, k).double()
    for r in range(4):
        p = out[r][true * k + given]
        assert la.fixed_point_residual(p, targets, gram, lam).abs().max() < 1e-10
        targets = p


def test_accumulated_remainder_closes_the_gap_to_the_closed_form():
    k, n, lam = 4, 6, 0.02
    kappa = noise.block_kappa(k, 0.4, 0.1)
    true = noise.class_labels([n] * k)
    given = _flip_pattern(true, n, k, [1, 1])
    counts = noise.type_counts(true, given, k)
    gram = noise.class_structured_gram([n] * k, kappa)
    exact = la.type_exact_outputs(kappa, counts, lam, 4)[:, true * k + given]  # (5, N, K)
    targets = torch.cat([torch.nn.functional.one_hot(given, k).double()[None], exact[:-1]])
    logits = gram @ (targets - exact) / (len(true) * lam)
    spectrum = la.GramSpectrum.from_gram(gram)
    closed = la.sd_outputs(given, spectrum, lam, 4, n_classes=k)
    correction = la.accumulated_remainder(logits[:, None], spectrum, lam)[:, 0]
    assert (exact - closed).abs().max() > 1e-4  # the remainder is not negligible here ...
    torch.testing.assert_close(exact, closed + correction, atol=1e-10, rtol=0)  # ... but exact


def test_test_outputs_at_training_points_equal_training_outputs():
    _, true, gram = _block(k=3, n=5)
    given = torch.randint(0, 3, true.shape, generator=torch.Generator().manual_seed(3))
    spectrum = la.GramSpectrum.from_gram(gram)
    train = la.sd_outputs(given, spectrum, 0.01, 4, n_classes=3)
    test = la.sd_test_outputs(given, spectrum, gram, 0.01, 4, n_classes=3)
    torch.testing.assert_close(train, test, atol=1e-12, rtol=0)


def test_closed_forms_are_fast_enough_for_a_slider():
    """The chapter's default real-data size (digits: N = 1257, K = 10, 11 rounds): one evaluation
    with a precomputed spectrum < 0.5 s; block curves (K^2 types) likewise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small dense kernels: one thread is fastest on a shared machine
    try:
        feats = torch.randn(1257, 64, generator=torch.Generator().manual_seed(0))
        spectrum = la.GramSpectrum.from_features(feats / feats.norm(dim=1, keepdim=True))
        labels = torch.randint(0, 10, (1257,), generator=torch.Generator().manual_seed(1))
        start = time.perf_counter()
        la.sd_outputs(labels, spectrum, 1e-3, 10, n_classes=10)
        assert time.perf_counter() - start < 0.5
        start = time.perf_counter()
        la.block_accuracy_curves(4, 500, 0.4, 0.1, 1e-5, 0.6, 40)
        assert time.perf_counter() - start < 0.5
    finally:
        torch.set_num_threads(threads)


def test_block_accuracy_curves_agree_with_the_threshold():
    k, n, c, d, lam, rounds = 4, 40, 0.4, 0.1, 1e-4, 10
    eta_t = la.noise_threshold(rounds, k, n, c, d, lam, max_share=0.5)
    ok = la.block_accuracy_curves(k, n, c, d, lam, eta_t - 0.01, rounds, max_share=0.5)
    bad = la.block_accuracy_curves(k, n, c, d, lam, eta_t + 0.01, rounds, max_share=0.5)
    assert ok["sd"][-1] == 1 and bad["sd"].max() < 1
    assert ok["pll"] == 1 and bad["pll"] == 1


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: la.shrinkage(torch.ones(3), -1.0, 2), ValueError),
        (lambda: la.shrinkage(torch.ones(3), 0.1, 1), ValueError),
        (lambda: la.GramSpectrum.from_gram(torch.tensor([[1.0, 2.0], [2.0, 1.0]])), ValueError),
        (lambda: la.GramSpectrum.from_gram(torch.ones(2, 3)), ValueError),
        (lambda: la.block_gram_eigenvalues(3, 4, 0.1, 0.4), ValueError),
        (
            lambda: la.minimum_rounds(torch.tensor([[0.5, 0.6], [0.5, 0.5]]), 4, 0.4, 0.1, 0.1),
            ValueError,
        ),
        (
            lambda: la.sd_outputs(
                torch.tensor([0, 5]), la.GramSpectrum.from_gram(torch.eye(2)), 0.1, 2, n_classes=3
            ),
            ValueError,
        ),
        (
            lambda: la.averaging_weights(
                la.GramSpectrum.from_gram(torch.eye(2)), 0.1, 2, applications=-1
            ),
            ValueError,
        ),
        (lambda: la.shrinkage(torch.ones(3), "0.1", 2), TypeError),
    ],
)
def test_invalid_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()


def test_unbalanced_frequencies_are_refused_by_the_log_formula():
    q = torch.tensor([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.2, 0.8]])
    with pytest.raises(ValueError, match="balanced"):
        la.minimum_rounds(q, 10, 0.4, 0.1, 1e-3)
    assert torch.isfinite(la.block_margins(q, 10, 0.4, 0.1, 1e-3, 3)).all()
