"""Reliability of the chapter modules (issue: reliability): property-based input checks for the
data generators (:mod:`kdlib.data`) and theory functions (:mod:`kdlib.theory`), and the closed
forms on ill-conditioned Gram matrices (near-duplicate points).

Valid inputs must give finite numbers in their documented ranges (probabilities in [0, 1] summing
to one, row-stochastic transition matrices, unit-norm inputs, ...); invalid inputs must raise a
ValueError or TypeError whose message names the offending argument.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kdlib.config import make_generator
from kdlib.data import label_noise as noise
from kdlib.data import mnist
from kdlib.data.digits import load_digits_split
from kdlib.data.multi_view import MultiViewParams, make_features, sample_multi_view
from kdlib.data.phuong_lampert import (
    AngularDistribution,
    sample_angular,
    sample_gaussian,
    teacher_direction,
)
from kdlib.data.privileged_information import make_teacher_student_data, sphere, student_view
from kdlib.ntk import relu_ntk
from kdlib.theory import kd
from kdlib.theory import label_averaging as la
from kdlib.theory import multi_view as mv
from kdlib.theory import phuong_lampert as pl
from kdlib.theory import privileged_information as pi
from kdlib.theory import soft_vs_hard as svh

FAST = settings(max_examples=25, deadline=None)
FEW = settings(max_examples=10, deadline=None)
F64 = torch.float64

seeds = st.integers(0, 2**31 - 1)
bad_sizes = st.integers(-5, 0)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
outside_unit = st.one_of(
    st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1 + 1e-6, allow_nan=False, allow_infinity=False),
    st.just(math.nan),
)
non_positive = st.one_of(
    st.floats(max_value=0.0, allow_nan=False, allow_infinity=False), non_finite
)


def _finite(*tensors) -> bool:
    return all(bool(torch.isfinite(torch.as_tensor(t, dtype=F64)).all()) for t in tensors)


def _is_simplex(p: torch.Tensor, atol: float = 1e-9) -> bool:
    return bool(
        (p >= -atol).all()
        and (p <= 1 + atol).all()
        and torch.allclose(p.sum(-1), torch.ones(()).to(p), atol=atol)
    )


def _distribution(kind: str, kappa: float, margin: float) -> AngularDistribution:
    return AngularDistribution(kind, kappa=kappa, margin=margin)


distributions = st.builds(
    _distribution,
    st.sampled_from(["polynomial", "margin"]),
    st.floats(0.1, 10.0),
    st.floats(0.0, 1.5),
)


# == data generators: valid inputs ================================================================


@FAST
@given(st.integers(1, 3), st.integers(1, 12), st.integers(3, 9), distributions, seeds)
def test_angular_inputs_are_unit_vectors_at_the_prescribed_angle(replicas, n, d, dist, seed):
    x, phi = sample_angular(replicas, n, d, dist, make_generator(seed))
    assert x.shape == (replicas, n, d) and phi.shape == (replicas, n) and _finite(x, phi)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(replicas, n, dtype=F64))
    lowest = dist.margin if dist.kind == "margin" else 0.0
    assert (phi >= lowest - 1e-12).all() and (phi <= math.pi / 2 + 1e-12).all()
    torch.testing.assert_close(x[..., 0].abs(), torch.sin(phi))  # <e_1, x> = +-sin(phi)
    cdf = dist.boundary_cdf(np.linspace(-1.0, 3.0, 50))
    assert np.all((cdf >= 0) & (cdf <= 1)) and np.all(np.diff(cdf) >= 0)
    gauss = sample_gaussian(replicas, n, d, make_generator(seed), dtype=torch.float32)
    assert gauss.shape == (replicas, n, d) and gauss.dtype == torch.float32 and _finite(gauss)


@st.composite
def multi_view_params(draw):
    k = draw(st.integers(2, 4))
    c_p = draw(st.integers(1, 2))
    low = draw(st.floats(0.0, 0.5))
    return MultiViewParams(
        n_classes=k,
        dim=draw(st.integers(2 * k, 2 * k + 6)),
        n_patches=draw(st.integers(2 * k * c_p, 2 * k * c_p + 4)),
        patches_per_feature=c_p,
        sparsity=draw(st.floats(0.0, float(k))),
        main_high=draw(st.floats(1.0, 3.0)),
        off_target_low=low,
        off_target_high=draw(st.floats(low, 0.99)),
        weak_view=draw(st.floats(0.0, 0.49)),
        single_off_target=draw(st.floats(0.0, 1.0)),
        feature_noise=draw(st.floats(0.0, 0.1)),
        noise_std=draw(st.floats(0.0, 0.5)),
    )


@FAST
@given(multi_view_params(), st.integers(1, 30), st.floats(0.0, 1.0), seeds)
def test_multi_view_samples_are_finite_and_well_formed(params, n, mu, seed):
    gen = make_generator(seed)
    features = make_features(params.n_classes, params.dim, generator=gen)
    k = params.n_classes
    gram = features.reshape(2 * k, -1) @ features.reshape(2 * k, -1).T
    torch.testing.assert_close(gram, torch.eye(2 * k, dtype=F64))  # orthonormal views
    data = sample_multi_view(params, features, n, mu, gen)
    assert data.x.shape == (n, params.n_patches, params.dim) and _finite(data.x, data.weights)
    assert ((data.y >= 0) & (data.y < k)).all() and set(data.view.tolist()) <= {-1, 0, 1}
    assert int(data.single_view.sum()) == int(round(mu * n)) and (data.weights >= 0).all()
    own = data.weights[torch.arange(n), data.y]  # (n, 2): the class's own views
    assert (own.amax(-1) >= 1).all()  # the strong view is always present


@FAST
@given(st.integers(2, 6), st.floats(0.0, 1.0), st.sampled_from(["sym", "asym", "cyclic"]))
def test_transition_matrices_are_row_stochastic(k, eta, kind):
    make = {
        "sym": noise.symmetric_transition,
        "asym": noise.asymmetric_transition,
        "cyclic": noise.cyclic_transition,
    }[kind]
    trans = make(k, eta)
    assert trans.shape == (k, k) and _finite(trans) and _is_simplex(trans, atol=1e-12)
    torch.testing.assert_close(trans.diagonal(), torch.full((k,), 1 - eta, dtype=F64))


@FAST
@given(
    st.lists(st.integers(1, 6), min_size=2, max_size=4),
    st.floats(0.0, 0.9),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    seeds,
)
def test_class_structured_features_have_the_prescribed_gram(sizes, c, d_frac, eps_frac, seed):
    kappa = noise.block_kappa(len(sizes), c, d_frac * c)
    eps = eps_frac * (1 - c)
    feats = noise.class_structured_features(sizes, kappa, eps, 4, generator=make_generator(seed))
    gram = noise.class_structured_gram(sizes, kappa)
    assert feats.shape[0] == sum(sizes) and _finite(feats, gram)
    torch.testing.assert_close((feats @ feats.T).diagonal(), torch.ones(sum(sizes), dtype=F64))
    if eps == 0:
        torch.testing.assert_close(feats @ feats.T, gram)
    assert torch.linalg.eigvalsh(gram).min() > -1e-10  # a Gram matrix: PSD


@FAST
@given(st.integers(2, 5), st.integers(1, 12), st.floats(0.0, 1.0), seeds)
def test_corrupted_labels_stay_in_range_and_match_the_transition(k, n, eta, seed):
    true = noise.class_labels([n] * k)
    trans = noise.symmetric_transition(k, eta)
    drawn = noise.corrupt_labels(true.expand(2, -1), trans, make_generator(seed))
    exact = noise.corrupt_labels_exact(true, trans)
    for given_labels in (drawn, exact):
        assert ((given_labels >= 0) & (given_labels < k)).all()
    q = noise.label_fractions(true, exact, k)
    assert _is_simplex(q, atol=1e-12)
    assert (q - trans).abs().max() <= 1.0 / n + 1e-12  # exact up to rounding to counts
    counts = noise.type_counts(true, drawn, k)
    assert counts.shape == (2, k, k) and float(counts.sum()) == 2 * n * k


@FEW
@given(st.integers(2, 5), st.floats(0.0, 1.0), seeds)
def test_class_confusable_transition_is_row_stochastic(k, eta, seed):
    gen = make_generator(seed)
    labels = torch.arange(4 * k) % k
    features = torch.randn(4 * k, 6, generator=gen, dtype=F64) + labels[:, None].double()
    trans, clusters = noise.class_confusable_transition(features, labels, eta, k)
    assert trans.shape == (k, k) and len(clusters) == k and _is_simplex(trans, atol=1e-12)


@FAST
@given(st.integers(1, 20), st.integers(1, 5), st.integers(2, 6), st.floats(0.0, 0.49), seeds)
def test_teacher_student_data_are_finite_unit_inputs_with_sign_labels(
    n_train, n_test, dim, eta, seed
):
    data = make_teacher_student_data(
        n_train, n_test, dim, teacher_width=3, label_noise=eta, seed=seed
    )
    for x, n in ((data.x_train, n_train), (data.x_test, n_test)):
        assert x.shape == (n, dim) and _finite(x)
        torch.testing.assert_close(x.norm(dim=1), torch.ones(n, dtype=F64))
    assert _finite(data.teacher_train, data.teacher_test)
    assert set(data.y_train.tolist()) <= {-1.0, 1.0} and set(data.y_test.tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(data.y_test, torch.where(data.teacher_test >= 0, 1.0, -1.0).double())
    visible = 1 + seed % dim
    view = student_view(sphere(n_train, dim, make_generator(seed)), visible)
    torch.testing.assert_close(view.norm(dim=1), torch.ones(n_train, dtype=F64))
    assert (view[:, visible:] == 0).all()


@FEW
@given(
    st.floats(0.05, 0.95),
    st.lists(st.integers(0, 9), min_size=2, max_size=4, unique=True),
    st.booleans(),
    seeds,
)
def test_digits_splits_are_finite_and_stratified(fraction, classes, standardize, seed):
    split = load_digits_split(fraction, tuple(classes), seed, standardize=standardize)
    assert _finite(split.x_train, split.x_test) and split.n_classes == len(classes)
    for y in (split.y_train, split.y_test):
        assert set(y.tolist()) == set(range(len(classes)))  # every class in both splits
    if not standardize:
        assert (split.x_train >= 0).all() and (split.x_train <= 1).all()


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@FAST
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.integers(1, 10), seeds)
def test_idx_files_round_trip_and_truncation_is_always_detected(shape, cut, seed):
    import tempfile
    from pathlib import Path

    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    payload = _idx_bytes(array)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x-idx-ubyte"
        path.write_bytes(payload)
        np.testing.assert_array_equal(mnist.read_idx(path), array)
        path.write_bytes(payload[: max(0, len(payload) - cut)])
        with pytest.raises(ValueError, match="IDX|bytes|magic"):
            mnist.read_idx(path)


# == data generators: invalid inputs ==============================================================


@FAST
@given(bad_sizes, st.sampled_from(["replicas", "n", "d"]))
def test_non_positive_sizes_are_rejected_by_name(bad, name):
    sizes = {"replicas": 2, "n": 3, "d": 4} | {name: bad}
    with pytest.raises(ValueError, match=name):
        sample_angular(**sizes, distribution=AngularDistribution(), generator=make_generator(0))
    with pytest.raises(ValueError, match=name):
        sample_gaussian(**sizes, generator=make_generator(0))


@FAST
@given(
    st.sampled_from([2.0, "3", None, 2.5]),
    st.sampled_from(["n_train", "n_test", "dim", "teacher_width"]),
)
def test_non_int_sizes_are_rejected_by_name(bad, name):
    args = {"n_train": 4, "n_test": 2, "dim": 3, "teacher_width": 2} | {name: bad}
    with pytest.raises((ValueError, TypeError), match=name):
        make_teacher_student_data(**args)


def test_generators_must_be_explicit_cpu_generators():
    dist = AngularDistribution()
    for call in (
        lambda g: sample_angular(1, 2, 3, dist, g),
        lambda g: sample_gaussian(1, 2, 3, g),
        lambda g: dist.sample_boundary_angles((2,), g),
        lambda g: sphere(2, 3, g),
        lambda g: noise.corrupt_labels(torch.tensor([0, 1]), torch.eye(2), g),
        lambda g: sample_multi_view(MultiViewParams(), make_features(4, 64, seed=0), 3, 0.1, g),
    ):
        with pytest.raises(TypeError, match="generator"):
            call(None)  # the global random state would break "a seed gives the same data"


@FAST
@given(outside_unit)
def test_probabilities_outside_the_unit_interval_are_rejected_by_name(p):
    with pytest.raises(ValueError, match="eta"):
        noise.symmetric_transition(3, p)
    with pytest.raises(ValueError, match="eta"):
        noise.cyclic_transition(4, p)
    with pytest.raises(ValueError, match="single_view_fraction"):
        sample_multi_view(MultiViewParams(), make_features(4, 64, seed=0), 5, p, make_generator(0))
    with pytest.raises(ValueError, match="label_noise"):
        make_teacher_student_data(4, 2, 3, label_noise=p if not 0 <= p < 0.5 else 0.5)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(p)


@FAST
@given(
    st.integers(2, 5),
    st.integers(0, 4),
    st.one_of(st.floats(-1.0, -1e-3), st.floats(1e-3, 1.0), non_finite),
    seeds,
)
def test_non_stochastic_transitions_are_rejected(k, row, shift, seed):
    trans = noise.symmetric_transition(k, 0.2).clone()
    trans[row % k, 0] += shift  # a row no longer sums to one (or turns NaN/inf)
    labels = torch.arange(k)
    with pytest.raises(ValueError, match="transition"):
        noise.corrupt_labels(labels, trans, make_generator(seed))
    with pytest.raises(ValueError, match="transition"):
        noise.corrupt_labels_exact(labels, trans)


@FAST
@given(st.integers(2, 5), st.one_of(st.integers(-6, -1), st.integers(5, 9)))
def test_labels_out_of_range_are_rejected_by_name(k, bad):
    labels = torch.tensor([0, 1, bad])
    trans = torch.eye(k, dtype=F64)
    with pytest.raises(ValueError, match="labels"):
        noise.corrupt_labels(labels, trans, make_generator(0))
    with pytest.raises(ValueError, match="labels"):
        noise.corrupt_labels_exact(labels, trans)
    with pytest.raises(ValueError, match="given_labels"):
        noise.type_counts(torch.tensor([0, 1, 0]), labels, k)
    with pytest.raises(ValueError, match="true_labels"):
        noise.label_fractions(labels, torch.tensor([0, 1, 0]), k)
    x = torch.randn(3, 4, dtype=F64)
    with pytest.raises(ValueError, match="labels"):
        noise.class_confusable_transition(x, labels, 0.1, n_classes=k)


def test_float_and_mismatched_labels_are_rejected():
    with pytest.raises(TypeError, match="labels"):
        noise.corrupt_labels(torch.tensor([0.0, 1.5]), torch.eye(2), make_generator(0))
    with pytest.raises(ValueError, match="true_labels and given_labels"):
        noise.type_counts(torch.tensor([0, 1, 0]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="labels must contain every class"):
        noise.class_confusable_transition(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), 0.1, 3)
    with pytest.raises(TypeError, match="class_sizes"):
        noise.class_labels([3, 2.5])


@FAST
@given(non_finite, st.sampled_from(["features", "x", "kappa", "perturbation"]))
def test_non_finite_data_are_rejected_by_name(bad, name):
    if name == "features":
        features = make_features(4, 64, seed=0).clone()
        features[0, 0, 0] = bad
        with pytest.raises(ValueError, match="features"):
            sample_multi_view(MultiViewParams(), features, 4, 0.1, make_generator(0))
        with pytest.raises(ValueError, match="features"):
            noise.class_confusable_transition(features.reshape(8, 64), torch.arange(8) % 4, 0.1, 4)
    elif name == "x":
        x = torch.ones(3, 4, dtype=F64)
        x[1, 0] = bad
        with pytest.raises(ValueError, match="x"):
            student_view(x, 2)
    elif name == "kappa":
        kappa = noise.block_kappa(2, 0.5, 0.1).clone()
        kappa[0, 1] = kappa[1, 0] = bad
        with pytest.raises(ValueError, match="kappa"):
            noise.class_structured_gram([2, 2], kappa)
    else:
        with pytest.raises(ValueError, match="perturbation"):
            noise.class_structured_features(
                [2, 2], noise.block_kappa(2, 0.5, 0.1), bad, generator=make_generator(0)
            )


@FAST
@given(
    st.sampled_from(["n_classes", "dim", "sparsity", "main_high", "noise_std", "weak_view"]),
    st.data(),
)
def test_invalid_multi_view_parameters_are_rejected_by_name(name, data):
    bad = {
        "n_classes": data.draw(st.one_of(st.integers(-3, 1), st.just(2.5))),
        "dim": data.draw(st.integers(-3, 7)),
        "sparsity": data.draw(st.one_of(st.floats(-5, -0.01), st.floats(4.01, 10), non_finite)),
        "main_high": data.draw(st.one_of(st.floats(-5, 0.99), non_finite)),
        "noise_std": data.draw(st.one_of(st.floats(-5, -0.01), non_finite)),
        "weak_view": data.draw(st.one_of(st.floats(0.5, 5), st.just("0.1"))),
    }[name]
    with pytest.raises((ValueError, TypeError), match=name):
        MultiViewParams(**{name: bad})


def test_invalid_loader_arguments_are_rejected_by_name(tmp_path):
    with pytest.raises(TypeError, match="classes"):
        load_digits_split(classes=(1, 2.5))
    with pytest.raises(TypeError, match="dtype"):
        load_digits_split(dtype=torch.long)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(0.001)  # no test image left for a class
    with pytest.raises(TypeError, match="classes"):
        mnist.load_mnist_pairs([(1, 2.5)], path=tmp_path)  # before any file is opened
    with pytest.raises(ValueError, match="pairs"):
        mnist.load_mnist_pairs([], path=tmp_path)
    with pytest.raises((ValueError, TypeError), match="d must"):
        teacher_direction(2.5)
    with pytest.raises(TypeError, match="dtype"):
        sample_gaussian(1, 2, 3, make_generator(0), dtype=torch.long)
    with pytest.raises(TypeError, match="margin"):
        AngularDistribution("margin", margin="0.1")
    with pytest.raises(ValueError, match="angle"):
        AngularDistribution().boundary_cdf([0.1, math.nan])
    with pytest.raises(ValueError, match="x"):
        student_view(torch.zeros(0, 4, dtype=F64), 2)


# == theory: valid inputs =========================================================================


logit_scales = st.sampled_from([1e-3, 1.0, 30.0, 1e3])


@FAST
@given(
    seeds, st.integers(1, 5), st.integers(1, 6), logit_scales, st.floats(1e-2, 1e3), st.booleans()
)
def test_kd_gradient_and_limits_are_finite_and_sum_to_zero(seed, n, k, scale, temperature, t2):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(n, k, generator=gen, dtype=F64) * scale
    teacher = torch.randn(n, k, generator=gen, dtype=F64) * scale
    grad = kd.kd_gradient(student, teacher, temperature, t_squared=t2)
    assert grad.shape == (n, k) and _finite(grad)
    torch.testing.assert_close(
        grad.sum(-1), torch.zeros(n, dtype=F64), atol=1e-9 * max(1, temperature), rtol=0
    )
    limit = kd.high_temperature_gradient_limit(student, teacher)
    loss = kd.high_temperature_loss_limit(student, teacher)
    assert _finite(limit, loss) and (loss >= 0).all()


@FAST
@given(st.integers(1, 3), st.integers(1, 8), st.integers(3, 6), seeds, st.floats(0.1, 10.0))
def test_phuong_lampert_closed_forms_are_finite_and_in_range(replicas, n, d, seed, scale):
    gen = make_generator(seed)
    x, _ = sample_angular(replicas, n, d, AngularDistribution(), gen)
    w_star = scale * teacher_direction(d)
    limit = pl.linear_student_limit(x, w_star)
    assert limit.shape == (replicas, d) and _finite(limit)
    torch.testing.assert_close(pl.span_projection(x, limit), limit)  # a projection: idempotent
    w_init = torch.randn(replicas, d, generator=gen, dtype=F64)
    deep = pl.deep_linear_limit(x, w_star, w_init, depth=1 + seed % 4)
    assert _finite(deep)
    lr = pl.gd_step_size(x)
    rho = pl.gd_contraction(x, limit, lr)
    assert _finite(lr, rho) and (lr > 0).all() and (rho >= 0).all() and (rho <= 1 + 1e-9).all()
    angle = pl.angle_between(w_init, w_star)
    assert ((angle >= 0) & (angle <= math.pi)).all()
    risk = pl.transfer_risk_of_angle(angle.numpy(), d, AngularDistribution())
    assert np.all((risk >= 0) & (risk <= 1))


@FAST
@given(distributions, st.lists(st.integers(1, 10**4), min_size=1, max_size=4))
def test_risk_bounds_and_rates_are_finite_probabilities(dist, sizes):
    bound = pl.risk_bound(sizes, dist, grid=501)
    assert bound.shape == (len(sizes),) and np.all((bound >= 0) & (bound <= 1))
    big = np.array([s for s in sizes if s >= 3])
    if big.size:
        assert np.all(np.isfinite(pl.polynomial_rate(big, dist.kappa)))
    if 0 < dist.margin < math.pi / 4:
        rate = pl.margin_rate(sizes, dist.margin)
        assert np.all((rate >= 0) & (rate <= 1))


@FEW
@given(st.integers(2, 8), st.integers(2, 4), seeds)
def test_kernel_margin_certificate_is_finite_and_ordered(n, d, seed):
    gen = make_generator(seed)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    y = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).double()
    est = svh.ntk_margin(x, y, rtol=1e-3, max_iter=3000)
    assert all(math.isfinite(v) for v in (est.gamma, est.lower, est.upper))
    assert (
        est.lower <= est.gamma + 1e-12 and est.gamma <= est.upper + 1e-12 and est.upper <= 1 + 1e-9
    )
    assert abs(est.weights.sum() - 1) < 1e-9 and (est.weights >= 0).all()  # a simplex point


@FAST
@given(st.floats(1e-3, 1.0), st.floats(1e-6, 0.999))
def test_width_bounds_are_finite_and_positive(gamma, eps):
    for width in (svh.soft_label_width(gamma, eps), svh.hard_label_width(gamma, eps)):
        assert math.isfinite(width) and width > 0
    assert math.isfinite(svh.width_ratio(gamma, eps))


@FAST
@given(st.floats(0.0, 1.0), st.integers(1, 30), st.integers(1, 5), seeds)
def test_multi_view_errors_lie_between_zero_and_mu(mu, members, k, seed):
    for error in (
        mv.single_model_error(mu),
        mv.ensemble_error(mu, members),
        mv.distillation_error(mu, members),
        mv.self_distillation_error(mu),
    ):
        assert 0 <= error <= mu
    learned = np.random.default_rng(seed).random((3, k, 2)) < 0.5
    error = mv.error_from_views(mu, learned)
    assert error.shape == (3,) and np.all((error >= 0) & (error <= 1))
    winner = mv.lottery_winner(np.random.default_rng(seed).normal(size=(k, 4, 2)))
    assert set(winner.tolist()) <= {0, 1}


@st.composite
def features_and_labels(draw):
    n = draw(st.integers(2, 10))
    k = draw(st.integers(2, 4))
    seed = draw(seeds)
    gen = make_generator(seed)
    features = torch.randn(n, draw(st.integers(1, 12)), generator=gen, dtype=F64)
    labels = torch.randint(0, k, (n,), generator=gen)
    return features, labels, k


@FAST
@given(features_and_labels(), st.floats(1e-6, 10.0), st.integers(0, 5))
def test_label_averaging_outputs_are_finite_and_sum_to_one(data, lam, rounds):
    features, labels, k = data
    spectrum = la.GramSpectrum.from_features(features)
    out = la.sd_outputs(labels, spectrum, lam, rounds, n_classes=k)
    assert out.shape == (rounds + 1, len(labels), k) and _finite(out)
    torch.testing.assert_close(out.sum(-1), torch.ones(rounds + 1, len(labels), dtype=F64))
    s = la.shrinkage(spectrum.eigenvalues, lam, k)
    assert ((s >= 0) & (s < 1)).all()
    m = la.averaging_weights(spectrum, lam, k)
    assert torch.linalg.eigvalsh((m + m.T) / 2).min() > -1e-12 and _finite(m)
    test = la.sd_test_outputs(labels, spectrum, features[:3] @ features.T, lam, rounds, n_classes=k)
    assert _finite(test) and torch.allclose(test.sum(-1), torch.ones((), dtype=F64))
    pll = la.pll_outputs(out[0], spectrum, lam)
    assert _finite(pll) and torch.allclose(pll.sum(-1), torch.ones((), dtype=F64))


@FAST
@given(
    st.integers(2, 4),
    st.integers(1, 20),
    st.floats(0.0, 0.9),
    st.floats(0.0, 1.0),
    st.floats(1e-5, 1.0),
    # zero, or a rate whose per-class share eta / (k - 1) is still a normal float: a subnormal
    # count is rejected by type_exact_outputs (tested with the invalid inputs below)
    st.one_of(st.just(0.0), st.floats(1e-300, 0.6)),
)
@example(k=4, n=1, c=0.0, d_frac=0.0, lam=1.0, eta=1e-300)  # the smallest noise, shared by three
def test_block_closed_forms_are_finite_and_in_range(k, n, c, d_frac, lam, eta):
    d = d_frac * c
    q = noise.symmetric_transition(k, eta)
    out = la.block_sd_outputs(q, n, c, d, lam, 3)
    assert _finite(out) and torch.allclose(out.sum(-1), torch.ones((), dtype=F64))
    tau = la.minimum_rounds(q, n, c, d, lam)
    assert tau == math.inf or (tau >= 1 and tau == int(tau))
    assert 0 <= la.noise_threshold(3, k, n, c, d, lam) < 1
    counts = q * n
    exact = la.type_exact_outputs(noise.block_kappa(k, c, d), counts, lam, 2)
    assert _is_simplex(exact, atol=1e-9)
    acc = la.type_accuracy(exact, counts)
    assert ((acc >= 0) & (acc <= 1)).all()


@FAST
@given(st.integers(2, 10), st.integers(2, 5), seeds, st.floats(0.0, 1.0), st.floats(0.05, 1.9))
def test_kernel_regime_closed_forms_are_finite(n, d, seed, rho, fraction):
    gen = make_generator(seed)
    x = sphere(n, d, gen)
    gram = pi.gram_matrix(x)
    labels = torch.where(torch.randn(n, generator=gen) >= 0, 1.0, -1.0).double()
    teacher = torch.randn(n, generator=gen, dtype=F64)
    target = pi.mixed_target(labels, teacher, rho)
    lr = pi.stable_learning_rate(gram, fraction)
    steps = [0, 1, 5, 50]
    out = pi.kernel_outputs(gram, target, steps, lr)
    norms = pi.residual_norms(gram, target, steps, lr)
    assert _finite(target, out, norms) and (norms[1:] <= norms[:-1] + 1e-12).all()
    err_data, err_teacher = pi.asymptotic_training_error(labels, teacher, rho)
    assert _finite(err_data, err_teacher) and err_data >= 0 and err_teacher >= 0
    try:
        bound = pi.generalization_bound(gram, target)
    except ValueError as error:  # only for Gram matrices singular to working precision
        assert "positive definite" in str(error)
    else:
        assert _finite(bound, pi.distance_from_init(gram, target, steps, lr))
        iters = pi.iterations_to_tolerance(gram, target, lr, 0.1)
        assert iters >= 0


# == theory: invalid inputs =======================================================================


@FAST
@given(non_positive)
def test_invalid_temperatures_and_ridges_are_rejected_by_name(bad):
    z = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="temperature"):
        kd.kd_gradient(z, z, bad)
    spectrum = la.GramSpectrum.from_gram(torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="lam"):
        la.sd_outputs(torch.tensor([0, 1]), spectrum, bad, 2, n_classes=2)
    with pytest.raises(ValueError, match="lam"):
        la.shrinkage(torch.ones(3), bad, 2)
    with pytest.raises(ValueError, match="lr"):
        pi.kernel_outputs(torch.eye(2), torch.zeros(2), [1], bad)
    with pytest.raises(ValueError, match="lr"):
        pl.gd_contraction(torch.ones(1, 2, 3, dtype=F64), torch.ones(3, dtype=F64), bad)


@FAST
@given(non_finite, st.sampled_from(["student_logits", "teacher_logits"]))
def test_non_finite_logits_are_rejected_by_name(bad, name):
    z = {"student_logits": torch.zeros(2, 3), "teacher_logits": torch.zeros(2, 3)}
    z[name][1, 2] = bad
    with pytest.raises(ValueError, match=name):
        kd.kd_gradient(**z, temperature=1.0)
    with pytest.raises(ValueError, match=name):
        kd.high_temperature_loss_limit(**z)


@FAST
@given(outside_unit)
def test_fractions_outside_the_unit_interval_are_rejected_by_name(p):
    with pytest.raises(ValueError, match="mu"):
        mv.single_model_error(p)
    with pytest.raises(ValueError, match="weight"):
        pi.mixed_target(torch.zeros(3), torch.ones(3), p)
    with pytest.raises(ValueError, match="gamma"):
        svh.soft_label_width(p if not 0 < p <= 1 else 0.0, 0.1)
    with pytest.raises(ValueError, match="eps"):
        svh.hard_label_width(0.5, p)
    with pytest.raises(ValueError, match="eta"):
        la.block_accuracy_curves(3, 5, 0.4, 0.1, 1e-2, p, 2)


@FAST
@given(st.integers(2, 4), st.floats(0.01, 0.5), st.integers(0, 3))
def test_label_fractions_that_are_not_distributions_are_rejected(k, shift, row):
    q = noise.symmetric_transition(k, 0.2).clone()
    q[row % k, 0] += shift
    with pytest.raises(ValueError, match="label_fractions"):
        la.block_sd_outputs(q, 5, 0.4, 0.1, 1e-2, 2)
    with pytest.raises(ValueError, match="label_fractions"):
        la.corruption_condition(q)
    targets = torch.full((3, k), 1.0 / k, dtype=F64)
    targets[row % 3, 0] += shift
    spectrum = la.GramSpectrum.from_gram(torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="targets"):
        la.linear_step(targets, spectrum, 1e-2)
    with pytest.raises(ValueError, match="labels"):
        la.sd_outputs(targets, spectrum, 1e-2, 2)


@FAST
@given(st.integers(2, 4), st.one_of(st.integers(-5, -1), st.integers(4, 9)))
def test_theory_labels_out_of_range_are_rejected_by_name(k, bad):
    spectrum = la.GramSpectrum.from_gram(torch.eye(3, dtype=F64))
    labels = torch.tensor([0, 1, bad])
    with pytest.raises(ValueError, match="labels"):
        la.sd_outputs(labels, spectrum, 1e-2, 2, n_classes=k)
    with pytest.raises(ValueError, match="labels"):
        svh.kernel_margin(torch.eye(3), labels.double())


@FAST
@given(st.lists(st.integers(1, 4), min_size=0, max_size=4).filter(lambda s: len(s) not in (2,)))
def test_wrong_ranks_are_rejected_by_name(shape):
    bad = torch.ones(tuple(shape), dtype=F64)
    with pytest.raises((ValueError, TypeError), match="gram"):
        la.GramSpectrum.from_gram(bad)
    with pytest.raises((ValueError, TypeError), match="gram"):
        pi.generalization_bound(bad, torch.ones(3, dtype=F64))
    with pytest.raises((ValueError, TypeError), match="x"):
        pi.gram_matrix(bad)
    if len(shape) != 3:
        with pytest.raises((ValueError, TypeError), match="x"):
            pl.span_basis(bad)


@FAST
@given(st.integers(1, 4), st.integers(1, 4))
def test_mismatched_shapes_are_rejected_by_name(n, extra):
    spectrum = la.GramSpectrum.from_gram(torch.eye(n, dtype=F64))
    with pytest.raises(ValueError, match="labels"):
        la.sd_outputs(torch.zeros(n + extra, dtype=torch.long), spectrum, 1e-2, 1, n_classes=2)
    with pytest.raises(ValueError, match="cross_gram"):
        la.sd_test_outputs(
            torch.zeros(n, dtype=torch.long), spectrum, torch.ones(2, n + extra), 1e-2, 1, 2
        )
    with pytest.raises(ValueError, match="target"):
        pi.kernel_outputs(torch.eye(n), torch.zeros(n + extra), [1], 0.1)
    with pytest.raises(ValueError, match="student_logits and teacher_logits"):
        kd.kd_gradient(torch.zeros(n + 1, 3), torch.zeros(n + 1 + extra, 3), 1.0)
    with pytest.raises(ValueError, match="u and v"):
        pl.angle_between(torch.ones(n + 1, 2), torch.ones(n + 1 + extra, 2))
    with pytest.raises(ValueError, match="w_star"):
        pl.linear_student_limit(torch.ones(1, 3, n, dtype=F64), torch.ones(n + extra, dtype=F64))


@FAST
@given(
    st.one_of(st.integers(-5, -1), st.floats(0.5, 3.5).filter(lambda v: v != int(v)), non_finite)
)
def test_invalid_steps_and_rounds_are_rejected_by_name(bad):
    with pytest.raises(ValueError, match="steps"):
        pi.kernel_outputs(torch.eye(2), torch.zeros(2), [0, bad], 0.1)
    spectrum = la.GramSpectrum.from_gram(torch.eye(2, dtype=F64))
    with pytest.raises((ValueError, TypeError), match="rounds"):
        la.sd_outputs(torch.tensor([0, 1]), spectrum, 1e-2, [0, bad], n_classes=2)


def test_empty_data_are_rejected_by_name():
    with pytest.raises(ValueError, match="gram"):
        la.GramSpectrum.from_gram(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="gram"):
        svh.kernel_margin(torch.zeros(0, 0), torch.zeros(0))
    with pytest.raises(ValueError, match="x"):
        svh.ntk_margin(torch.zeros(0, 2), torch.zeros(0))
    with pytest.raises(ValueError, match="gram"):
        pi.spectrum(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="outputs"):
        pi.training_error(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="x"):
        pl.span_basis(torch.zeros(1, 0, 3, dtype=F64))
    with pytest.raises(ValueError, match="learned"):
        mv.error_from_views(0.1, np.zeros((0, 2), dtype=bool))
    with pytest.raises(ValueError, match="counts"):
        la.type_linear_outputs(noise.block_kappa(2, 0.4, 0.1), torch.zeros(2, 2), 1e-2, 1)
    with pytest.raises(ValueError, match="logits"):
        la.softmax_remainder(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="student_logits"):
        kd.kd_gradient(torch.zeros(2, 0), torch.zeros(2, 0), 1.0)


def test_previously_obscure_failures_now_name_the_argument():
    """Inputs that used to give NaN, a ZeroDivisionError, an IndexError or a silent wrong answer."""
    x = torch.randn(2, 5, 4, dtype=F64)
    subnormal = torch.tensor([[1.0, 1e-309], [1e-309, 1.0]], dtype=F64)  # 1/count overflows
    cases = [
        (lambda: pl.angle_between(torch.zeros(3), torch.ones(3)), ValueError, "u"),
        (lambda: pl.gd_step_size(torch.zeros(2, 3, 4, dtype=F64)), ValueError, "x"),
        (lambda: pl.gd_step_size(x, torch.zeros(5, dtype=F64)), ValueError, "sample_weight"),
        (lambda: pl.linear_student_limit(x, torch.ones(4)), TypeError, "w_star"),
        (
            lambda: pl.transfer_risk_of_angle([0.1], 5, AngularDistribution(), 0),
            ValueError,
            "nodes",
        ),
        (lambda: pl.margin_rate(math.nan, 0.1), ValueError, "n"),
        (lambda: svh.kernel_margin(-torch.eye(2), torch.tensor([1.0, -1.0])), ValueError, "gram"),
        (lambda: svh.soft_label_width(0.5, 0.1, constant=math.nan), ValueError, "constant"),
        (lambda: mv.error_from_views(0.1, np.full((3, 2), 0.5)), ValueError, "learned"),
        (lambda: mv.lottery_winner(np.full((2, 3, 2), math.nan)), ValueError, "init_correlations"),
        (lambda: la.averaging_weights(torch.eye(3), 1e-2, 2), TypeError, "spectrum"),
        (lambda: la.first_full_accuracy_round([0.5, math.nan]), ValueError, "accuracy"),
        (
            lambda: la.type_accuracy(torch.ones(3, 5, 2), torch.ones(2, 2)),
            ValueError,
            "type_outputs",
        ),
        (lambda: pi.stable_learning_rate(torch.zeros(2, 2)), ValueError, "gram"),
        (lambda: la.type_exact_outputs(torch.zeros(2, 2), subnormal, 1.0, 1), ValueError, "counts"),
        (lambda: pi.deviation_bound(torch.ones(3), torch.ones(3), 0.1, 0), ValueError, "n"),
        (
            lambda: pi.iterations_to_tolerance(
                torch.eye(2)[None].repeat(2, 1, 1), torch.ones(2, 2), 0.1, 0.1
            ),
            ValueError,
            "gram",
        ),
        (
            lambda: pi.crossing_interval(torch.ones(3), torch.ones(3), math.nan),
            ValueError,
            "threshold",
        ),
        (lambda: pi.mixed_target(np.zeros(3), np.zeros(3), 0.5), TypeError, "labels"),
        (
            lambda: noise.corrupt_labels_exact(torch.tensor([0, 5]), torch.eye(3)),
            ValueError,
            "labels",
        ),
        (
            lambda: noise.class_structured_features(
                [2, 2], noise.block_kappa(2, 0.5, 0.1), math.nan
            ),
            ValueError,
            "perturbation",
        ),
    ]
    for call, error, name in cases:
        with pytest.raises(error, match=name):
            call()


def test_minimum_rounds_is_infinite_when_classes_are_indistinguishable():
    """``c = d``: the class term never outgrows the own-label term (was a ZeroDivisionError)."""
    q = noise.symmetric_transition(3, 0.3)
    assert la.minimum_rounds(q, 10, 0.3, 0.3, 1e-2) == math.inf
    assert la.noise_threshold(5, 3, 10, 0.3, 0.3, 1e-2) == 0.0


# == ill-conditioned Gram matrices: near-duplicate points =========================================


def _near_duplicates(delta: float, n: int = 6, p: int = 8, seed: int = 0) -> torch.Tensor:
    gen = make_generator(seed)
    x = torch.randn(n, p, generator=gen, dtype=F64)
    x[1] = x[0] + delta * torch.randn(p, generator=gen, dtype=F64)
    return x


def _direct_sd_outputs(features, labels, k, lam, rounds):
    """``1/K + M^(t+1) (Y - 1/K)`` with ``M = G (G + K N lam I)^{-1}`` by a linear solve (well
    conditioned for any G, since its eigenvalues are at least K N lam)."""
    g = features @ features.T
    n = g.shape[0]
    m = torch.linalg.solve(g + k * n * lam * torch.eye(n, dtype=F64), g).T  # symmetric
    y = torch.nn.functional.one_hot(labels, k).double() - 1.0 / k
    out, cur = [], y
    for _ in range(rounds + 1):
        cur = m @ cur
        out.append(cur + 1.0 / k)
    return torch.stack(out)


@pytest.mark.parametrize("delta", [1e-1, 1e-4, 1e-8, 1e-12, 0.0])
def test_label_averaging_is_stable_on_near_duplicate_points(delta):
    """The closed form never inverts G, only G + K N lam I: it matches a direct solve to round-off
    however close two points are (cond(G) up to infinity), and tends to the duplicate's value."""
    labels, k, lam = torch.tensor([0, 1, 2, 0, 1, 2]), 3, 1e-3
    x = _near_duplicates(delta)
    spectrum = la.GramSpectrum.from_features(x)
    out = la.sd_outputs(labels, spectrum, lam, 4, n_classes=k)
    assert _finite(out)
    torch.testing.assert_close(out, _direct_sd_outputs(x, labels, k, lam, 4), rtol=0, atol=1e-10)
    limit = la.sd_outputs(labels, la.GramSpectrum.from_features(_near_duplicates(0.0)), lam, 4, k)
    assert float((out - limit).abs().max()) <= 100 * delta + 1e-10  # continuous as delta -> 0


def test_label_averaging_refuses_a_ridge_below_the_gram_precision():
    """On a singular G, round-off eigenvalues (~1e-16 max(mu)) are shrunk by lam only if
    K N lam > N eps max(mu); below that the answer would be decided by round-off."""
    x = _near_duplicates(0.0, n=6, p=2)  # rank 2: four eigenvalues are round-off
    spectrum = la.GramSpectrum.from_features(x)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    floor = torch.finfo(F64).eps * float(spectrum.eigenvalues.max()) / 3
    ok = la.sd_outputs(labels, spectrum, 10 * floor, 2, n_classes=3)
    assert _finite(ok) and torch.allclose(ok.sum(-1), torch.ones((), dtype=F64))
    with pytest.raises(ValueError, match="lam"):
        la.sd_outputs(labels, spectrum, floor / 10, 2, n_classes=3)
    with pytest.raises(ValueError, match="lam"):
        la.accumulated_remainder(torch.zeros(2, 1, 6, 3), spectrum, floor / 10)


@pytest.mark.parametrize("gap", [1e-1, 1e-4, 1e-8, 1e-12])
def test_type_dynamics_are_finite_as_within_class_correlation_approaches_one(gap):
    """``kappa_jj = 1 - gap``: the points of a class become near-duplicates. The exact dynamics
    (which invert the type kernel) stay finite and in the simplex while it is numerically
    invertible; the linearised ones need no inverse."""
    kappa = noise.block_kappa(3, 1 - gap, 0.1)
    counts = torch.tensor([[8.0, 1, 1], [1, 8, 1], [1, 1, 8]])
    linear = la.type_linear_outputs(kappa, counts, 1e-2, 3)
    exact = la.type_exact_outputs(kappa, counts, 1e-2, 3)
    assert _finite(linear) and torch.allclose(linear.sum(-1), torch.ones((), dtype=F64))
    assert _is_simplex(exact, atol=1e-9)
    # the exact outputs converge as gap -> 0 (true change ~ gap), up to the documented round-off
    # of order cond(Kt) eps
    closer = la.type_exact_outputs(noise.block_kappa(3, 1 - gap / 10, 0.1), counts, 1e-2, 3)
    cls = torch.arange(3).repeat_interleave(3)
    kernel = kappa[cls][:, cls] + torch.diag(gap / counts.reshape(-1).double())
    round_off = float(torch.linalg.cond(kernel)) * torch.finfo(F64).eps
    assert float((exact - closer).abs().max()) <= 10 * gap + 10 * round_off


def test_type_dynamics_refuse_a_type_kernel_singular_to_working_precision():
    kappa = noise.block_kappa(3, 1 - 1e-16, 0.1)  # the largest float below 1
    counts = torch.tensor([[8.0, 1, 1], [1, 8, 1], [1, 1, 8]])
    with pytest.raises(ValueError, match="kappa"):
        la.type_exact_outputs(kappa, counts, 1e-2, 2)
    assert _finite(la.type_linear_outputs(kappa, counts, 1e-2, 2))


def _unit_near_duplicates(delta: float, n: int = 5, d: int = 3, seed: int = 1) -> torch.Tensor:
    x = _near_duplicates(delta, n, d, seed)
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("delta", [1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
def test_kernel_regime_closed_forms_are_stable_on_near_duplicate_inputs(delta):
    """H^{-1} without regularisation: with equal targets on the near-duplicates,
    ytilde^T H^{-1} ytilde tends to its value without the duplicate (finite, continuous); with
    opposite targets it grows without bound, as it should (the function must jump)."""
    x = _unit_near_duplicates(delta)
    gram = pi.gram_matrix(x)
    same = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0], dtype=F64)
    n = len(same)
    quad = float(pi.generalization_bound(gram, same)) ** 2 * n / 2
    reduced = pi.gram_matrix(x[1:])
    quad_without = float(pi.generalization_bound(reduced, same[1:])) ** 2 * (n - 1) / 2
    assert math.isfinite(quad) and abs(quad - quad_without) <= 10 * math.sqrt(delta) * quad_without
    opposite = same.clone()
    opposite[1] = -1.0
    assert float(pi.generalization_bound(gram, opposite)) > float(
        pi.generalization_bound(gram, same)
    )
    lr = pi.stable_learning_rate(gram)
    assert _finite(
        pi.distance_from_init(gram, same, [1, 10, 1000], lr),
        pi.kernel_test_outputs(relu_ntk(x[:2], x), gram, same, [1, 10], lr),
    )


def test_kernel_regime_refuses_a_gram_singular_to_working_precision():
    """Exact duplicates: lambda_min is round-off (of either sign); every H^{-1} closed form raises
    the same clear error, while the forms without an inverse stay finite."""
    x = _unit_near_duplicates(0.0)
    gram = pi.gram_matrix(x)
    target = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0], dtype=F64)
    lr = pi.stable_learning_rate(gram)
    for call in (
        lambda: pi.generalization_bound(gram, target),
        lambda: pi.distance_from_init(gram, target, [1], lr),
        lambda: pi.kernel_test_outputs(relu_ntk(x[:2], x), gram, target, [1], lr),
        lambda: pi.iterations_to_tolerance(gram, target, lr, 0.1),
    ):
        with pytest.raises(ValueError, match="gram must be positive definite"):
            call()
    assert _finite(pi.kernel_outputs(gram, target, [0, 10, 10**6], lr))


def test_margin_and_span_handle_duplicate_points():
    x = _unit_near_duplicates(0.0, n=6, d=3)
    y = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0, -1.0])
    est = svh.ntk_margin(x.float(), y, rtol=1e-3)
    assert math.isfinite(est.gamma) and est.lower <= est.upper + 1e-12
    basis = pl.span_basis(x[None])
    projection = basis[0] @ basis[0].T
    torch.testing.assert_close(projection @ projection, projection)  # still a projection
    assert _finite(pl.linear_student_limit(x[None], teacher_direction(3)))
