"""kdlib.widgets: the compute functions are right, the explorers redraw on a change, and their
display carries the static PNG that the HTML book shows."""

import base64
import math

import numpy as np
import pytest
import torch

from kdlib import widgets

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_soft_labels_match_torch_softmax():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    for temperature in (0.1, 1.0, 3.7, 100.0):
        expected = torch.softmax(logits / temperature, dim=-1).numpy()
        np.testing.assert_allclose(
            widgets.soft_labels(logits.numpy(), temperature), expected, atol=1e-12
        )


def test_soft_labels_temperature_limits():
    logits = np.array(widgets.DEFAULT_TEACHER_LOGITS)
    cold = widgets.soft_labels(logits, 1e-3)
    hot = widgets.soft_labels(logits, 1e6)
    assert cold[np.argmax(logits)] == pytest.approx(1.0)
    np.testing.assert_allclose(hot, np.full(len(logits), 1 / len(logits)), atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan")])
def test_soft_labels_reject_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        widgets.soft_labels([1.0, 2.0], temperature)


def test_soft_labels_reject_bad_shape():
    with pytest.raises(ValueError, match="teacher_logits"):
        widgets.soft_labels([1.0], 1.0)


def test_temperature_explorer_redraws_when_the_slider_moves():
    explorer = widgets.temperature_explorer(temperature=4.0)
    assert explorer.values == {"temperature": pytest.approx(4.0)}
    before = bytes(explorer.image.value)
    assert before.startswith(PNG_SIGNATURE)
    explorer.controls["temperature"].value = 20.0
    after = bytes(explorer.image.value)
    assert after.startswith(PNG_SIGNATURE)
    assert after != before


def test_explorer_display_offers_the_widget_and_a_static_png():
    explorer = widgets.temperature_explorer()
    data, _ = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data  # live kernels show the widget
    assert base64.b64decode(data["image/png"]).startswith(PNG_SIGNATURE)  # the static book the PNG
    assert "slider" in data["text/plain"]


def test_one_update_is_cheap(capsys):
    """The work of one update is one softmax over K numbers and one small figure; the timing is
    printed as a benchmark (not asserted: shared CI machines are too noisy for that)."""
    probs = widgets.soft_labels(widgets.DEFAULT_TEACHER_LOGITS, 2.5)
    assert probs.shape == (len(widgets.DEFAULT_TEACHER_LOGITS),)
    timings = widgets.benchmark(repeats=1)
    with capsys.disabled():
        for case, seconds in timings.items():
            ms = 1000 * seconds
            print(f"\n[widget benchmark] {case}: {ms:.1f} ms per update (target < 500 ms)")
    assert all(math.isfinite(s) and s > 0 for s in timings.values())


def test_geometry_curves_follow_the_theory_module():
    from kdlib.data.phuong_lampert import AngularDistribution
    from kdlib.theory import phuong_lampert as theory

    curves = widgets.geometry_curves("polynomial", kappa=2.0)
    expected = theory.risk_bound(curves["sizes"], AngularDistribution("polynomial", 2.0), grid=4001)
    np.testing.assert_allclose(curves["bound"], expected)
    np.testing.assert_allclose(curves["mass_near_boundary"], (2 * curves["angle"] / np.pi) ** 2)
    assert np.all(np.diff(curves["bound"]) <= 1e-12)  # more data, smaller bound
    margin = widgets.geometry_curves("margin", margin=0.3)
    assert np.all(np.isfinite(margin["rate"]))
    assert margin["mass_near_boundary"][margin["angle"] <= 0.3].max() == 0.0


def test_geometry_explorer_redraws_for_each_control():
    explorer = widgets.geometry_explorer()
    images = {bytes(explorer.image.value)}
    for name, value in (("kappa", 4.0), ("kind", "margin"), ("margin", 0.5)):
        explorer.controls[name].value = value
        images.add(bytes(explorer.image.value))
    assert len(images) == 4


def test_label_averaging_curves_follow_the_theory_module():
    from kdlib.theory import label_averaging as theory

    model = widgets.LABEL_AVERAGING_MODEL
    block = {k: model[k] for k in ("n_per_class", "c", "d", "lam")}
    curves = widgets.label_averaging_curves(rounds=3, noise_rate=0.4)
    q = widgets.symmetric_noise(0.4, model["n_classes"])
    expected = theory.block_sd_outputs(q, rounds=[3], **block)[0, 0, 1].numpy()
    np.testing.assert_allclose(curves["mislabelled"], expected)
    np.testing.assert_allclose(curves["correct"].sum(), 1.0)
    needed = curves["minimum_rounds"]
    assert curves["margins"][int(needed)] > 0 and curves["margins"][int(needed) - 1] <= 0
    assert widgets.label_averaging_curves(noise_rate=0.0)["margins"][0] > 0  # clean labels


def test_symmetric_noise_rows_sum_to_one():
    q = widgets.symmetric_noise(0.3, 5).numpy()
    np.testing.assert_allclose(q.sum(1), 1.0)
    assert q[0, 0] == pytest.approx(0.7) and q[0, 1] == pytest.approx(0.3 / 4)
    with pytest.raises(ValueError, match="noise_rate"):
        widgets.symmetric_noise(1.0, 5)


def test_label_averaging_explorer_redraws_for_each_control():
    explorer = widgets.label_averaging_explorer()
    before = bytes(explorer.image.value)
    explorer.controls["rounds"].value = 12
    middle = bytes(explorer.image.value)
    explorer.controls["noise_rate"].value = 0.2
    assert len({before, middle, bytes(explorer.image.value)}) == 3
