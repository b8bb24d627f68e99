"""The teacher-student data model with privileged coordinates."""

import pytest
import torch

from kdlib.data.privileged_information import make_teacher_student_data, sphere, student_view


def test_inputs_are_unit_and_teacher_is_standardised():
    data = make_teacher_student_data(500, 3000, 6, teacher_width=8, seed=0)
    torch.testing.assert_close(data.x_train.norm(dim=1), torch.ones(500, dtype=torch.float64))
    phi = torch.cat([data.teacher_train, data.teacher_test])
    assert abs(phi.mean().item()) < 0.1  # 3500 samples: standard error about 0.017
    assert abs(phi.std().item() - 1) < 0.1


def test_labels_are_the_teacher_signs_flipped_at_the_given_rate():
    clean = make_teacher_student_data(2000, 10, 5, seed=1)
    torch.testing.assert_close(
        clean.y_train, torch.where(clean.teacher_train >= 0, 1.0, -1.0).double()
    )
    noisy = make_teacher_student_data(2000, 10, 5, label_noise=0.2, seed=1)
    flipped = (noisy.y_train != torch.sign(noisy.teacher_train)).double().mean().item()
    assert abs(flipped - 0.2) < 0.03  # binomial standard error 0.009
    torch.testing.assert_close(
        noisy.y_test, torch.where(noisy.teacher_test >= 0, 1.0, -1.0).double()
    )


def test_same_seed_same_data():
    a = make_teacher_student_data(20, 5, 4, seed=3)
    b = make_teacher_student_data(20, 5, 4, seed=3)
    torch.testing.assert_close(a.x_train, b.x_train)
    torch.testing.assert_close(a.teacher_train, b.teacher_train)


def test_student_view_keeps_visible_coordinates_on_the_sphere():
    x = sphere(50, 6, torch.Generator().manual_seed(4))
    view = student_view(x, 4)
    assert torch.all(view[:, 4:] == 0)
    torch.testing.assert_close(view.norm(dim=1), torch.ones(50, dtype=torch.float64))
    direction = x[:, :4] / x[:, :4].norm(dim=1, keepdim=True)
    torch.testing.assert_close(view[:, :4], direction)
    torch.testing.assert_close(student_view(x, 6), x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_train": 0}, "n_train"),
        ({"dim": 2.5}, "dim"),
        ({"teacher_width": 0}, "teacher_width"),
        ({"label_noise": 0.5}, "label_noise"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = {"n_train": 10, "n_test": 5, "dim": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        make_teacher_student_data(**args)


def test_student_view_rejects_bad_visible():
    with pytest.raises(ValueError, match="visible"):
        student_view(torch.ones(3, 4), 5)
