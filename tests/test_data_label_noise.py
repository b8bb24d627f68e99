"""Features with a prescribed Gram matrix and the label-noise models (kdlib.data.label_noise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlib.data import label_noise as noise

F64 = torch.float64


@pytest.mark.parametrize(
    "sizes, kappa",
    [
        ([5, 5, 5], noise.block_kappa(3, 0.4, 0.1)),
        ([6, 3, 6, 3], noise.hierarchical_kappa([0, 0, 1, 1], 0.6, 0.35, 0.1)),
    ],
)
def test_features_have_the_prescribed_gram_matrix(sizes, kappa):
    feats = noise.class_structured_features(sizes, kappa)
    true = noise.class_labels(sizes)
    gram = feats @ feats.T
    # reference built entry by entry, independently of class_structured_gram
    ref = torch.empty(len(true), len(true), dtype=F64)
    for i in range(len(true)):
        for j in range(len(true)):
            ref[i, j] = 1.0 if i == j else kappa[true[i], true[j]]
    torch.testing.assert_close(gram, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(noise.class_structured_gram(sizes, kappa), ref, atol=0, rtol=0)


def test_perturbed_features_keep_unit_norms_and_are_seeded():
    kappa = noise.block_kappa(3, 0.4, 0.1)
    a = noise.class_structured_features(
        [4, 4, 4], kappa, 0.1, generator=torch.Generator().manual_seed(0)
    )
    b = noise.class_structured_features(
        [4, 4, 4], kappa, 0.1, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(12, dtype=F64), atol=1e-12, rtol=0)
    off = (a @ a.T - noise.class_structured_gram([4, 4, 4], kappa)).abs()
    assert 0 < off.max() <= 0.1 + 1e-12


def test_transitions_are_row_stochastic_and_have_the_stated_plurality():
    for trans in (
        noise.symmetric_transition(5, 0.6),
        noise.asymmetric_transition(5, 0.6),
        noise.cyclic_transition(5, 0.6, (0.4, 0.2, 0.2, 0.2)),
    ):
        torch.testing.assert_close(trans.sum(1), torch.ones(5, dtype=F64))
        assert (trans >= 0).all()
    cyc = noise.cyclic_transition(4, 0.5)
    assert torch.allclose(cyc[0], torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=F64))
    # plurality iff eta < 1 / (1 + 1/2) = 2/3
    assert noise.cyclic_transition(4, 0.66)[0, 0] > noise.cyclic_transition(4, 0.66)[0, 1]
    assert noise.cyclic_transition(4, 0.67)[0, 0] < noise.cyclic_transition(4, 0.67)[0, 1]
    asym = noise.asymmetric_transition(4, 0.4)
    assert torch.allclose(asym[0], torch.tensor([0.6, 0.2, 0.1, 0.1], dtype=F64))


def test_exact_corruption_hits_the_fractions_exactly():
    true = noise.class_labels([30, 30, 30, 30])
    given = noise.corrupt_labels_exact(true, noise.symmetric_transition(4, 0.3))
    q = noise.label_fractions(true, given, 4)
    torch.testing.assert_close(q, noise.symmetric_transition(4, 0.3), atol=1e-12, rtol=0)
    # largest-remainder rounding keeps each class's size
    uneven = noise.corrupt_labels_exact(
        noise.class_labels([7, 7]), noise.symmetric_transition(2, 0.3)
    )
    counts = noise.type_counts(noise.class_labels([7, 7]), uneven, 2)
    assert counts.sum(1).tolist() == [7.0, 7.0] and counts[0, 1] == 2


def test_random_corruption_is_seeded_and_matches_the_transition_on_average():
    true = noise.class_labels([4000] * 3)
    trans = noise.symmetric_transition(3, 0.4)
    a = noise.corrupt_labels(true, trans, torch.Generator().manual_seed(5))
    b = noise.corrupt_labels(true, trans, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    q = noise.label_fractions(true, a, 3)
    assert (q - trans).abs().max() < 0.03  # 4000 draws per class: std < 0.008
    batched = noise.corrupt_labels(true.expand(2, -1), trans, torch.Generator().manual_seed(1))
    assert batched.shape == (2, 12000) and not torch.equal(batched[0], batched[1])


def test_type_counts_by_hand():
    true = torch.tensor([0, 0, 0, 1, 1, 2])
    given = torch.tensor([0, 1, 1, 1, 2, 0])
    expected = torch.tensor([[1, 2, 0], [0, 1, 1], [1, 0, 0]], dtype=F64)
    torch.testing.assert_close(noise.type_counts(true, given, 3), expected)
    torch.testing.assert_close(
        noise.label_fractions(true, given, 3)[0], torch.tensor([1 / 3, 2 / 3, 0], dtype=F64)
    )


def test_class_confusable_noise_groups_classes_with_correlated_features():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor(
        [[5.0, 0.0, 0.0], [5.0, 1.0, 0.0], [-5.0, 0.0, 1.0], [-5.0, 0.0, 2.0]], dtype=F64
    )
    labels = torch.arange(4).repeat_interleave(25)
    feats = centres[labels] + 0.2 * torch.randn(100, 3, generator=gen, dtype=F64)
    trans, clusters = noise.class_confusable_transition(feats, labels, 0.3)
    assert clusters[0] == clusters[1] != clusters[2] == clusters[3]
    expected = torch.tensor(
        [[0.7, 0.3, 0, 0], [0.3, 0.7, 0, 0], [0, 0, 0.7, 0.3], [0, 0, 0.3, 0.7]], dtype=F64
    )
    torch.testing.assert_close(trans, expected)


@pytest.mark.parametrize(
    "call",
    [
        lambda: noise.block_kappa(3, 0.1, 0.4),
        lambda: noise.block_kappa(1, 0.4, 0.1),
        lambda: noise.hierarchical_kappa([0, 0], 0.3, 0.5, 0.1),
        lambda: noise.class_structured_features([3, 3], np.array([[0.5, 0.9], [0.9, 0.5]])),
        lambda: noise.class_structured_features([3, 3], noise.block_kappa(2, 0.5, 0.1), 0.1),
        lambda: noise.class_structured_features([3, 3], noise.block_kappa(2, 0.5, 0.1), 0.6),
        lambda: noise.symmetric_transition(3, 1.5),
        lambda: noise.cyclic_transition(4, 0.3, (0.5, 0.5)),
        lambda: noise.corrupt_labels_exact(torch.zeros(2, 3, dtype=torch.long), torch.eye(2)),
        lambda: noise.corrupt_labels(
            torch.zeros(3, dtype=torch.long), torch.ones(2, 2), torch.Generator()
        ),
        lambda: noise.class_labels([3]),
    ],
)
def test_invalid_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
