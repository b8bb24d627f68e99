"""Teacher-student data with privileged information (Vapnik & Vashist, 2009, in the setting of
Rahbar et al., arXiv:2003.13438).

A *teacher* ``phi(x) = m_T^{-1/2} sum_j b_j relu(<v_j, x>)`` (random ``v_j ~ N(0, I_d)``,
``b_j = +-1``, then standardised to unit variance and zero mean) sees the full input
``x in S^{d-1}``. The labels are its hard decisions ``y = sign(phi(x))``, each flipped with
probability ``label_noise``. The teacher's real-valued output ``phi`` on the training inputs is
the *privileged information*: available while the student trains, never at test time.

The student may see only the first ``visible`` coordinates of ``x`` (renormalised to the unit
sphere and zero-padded back to ``d``, so that students of every capacity share one batched
model): with ``visible < d`` the teacher's function is no longer one the student can represent,
the learning-using-privileged-information situation where the teacher knows more than the
student can express.

All randomness is drawn from seeded CPU generators.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from ..config import make_generator

__all__ = ["TeacherStudentData", "make_teacher_student_data", "student_view", "sphere"]


@dataclass
class TeacherStudentData:
    """One draw of the teacher-student model.

    Attributes
    ----------
    x_train : Tensor, shape ``(n_train, d)``, unit rows
    x_test : Tensor, shape ``(n_test, d)``, unit rows
    teacher_train : Tensor, shape ``(n_train,)``
        The privileged information ``phi(x_i)``.
    teacher_test : Tensor, shape ``(n_test,)``
    y_train : Tensor, shape ``(n_train,)``
        Labels in ``{-1, +1}`` (``sign(phi)``, possibly flipped).
    y_test : Tensor, shape ``(n_test,)``
        Clean test labels ``sign(phi)``.
    """

    x_train: torch.Tensor
    x_test: torch.Tensor
    teacher_train: torch.Tensor
    teacher_test: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor


def sphere(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points uniform on the unit sphere of ``R^dim``, shape ``(n, dim)``, float64."""
    for name, value in (("n", n), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if n < 1 or dim < 1:
        raise ValueError(f"n and dim must be >= 1; got n={n}, dim={dim}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a CPU torch.Generator; got {type(generator).__name__}")
    points = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return points / points.norm(dim=1, keepdim=True)


def make_teacher_student_data(
    n_train: int,
    n_test: int,
    dim: int,
    teacher_width: int = 8,
    label_noise: float = 0.0,
    seed: int = 0,
) -> TeacherStudentData:
    """Draw inputs, a random two-layer ReLU teacher, its privileged outputs and the labels.

    Parameters
    ----------
    n_train, n_test : int
        Sample sizes.
    dim : int
        Input dimension ``d`` (the teacher sees all of it).
    teacher_width : int
        Hidden neurons of the teacher (its capacity).
    label_noise : float in ``[0, 0.5)``
        Probability of flipping each training label.
    seed : int
        Seed of the CPU generator for inputs, teacher and label flips.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if isinstance(teacher_width, bool) or not isinstance(teacher_width, int) or teacher_width < 1:
        raise ValueError(f"teacher_width must be a positive int; got {teacher_width!r}")
    if isinstance(label_noise, bool) or not isinstance(label_noise, numbers.Real):
        raise TypeError(f"label_noise must be a real number; got {type(label_noise).__name__}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5); got {label_noise}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    gen = make_generator(seed)
    hidden = torch.randn(teacher_width, dim, generator=gen, dtype=torch.float64)
    signs = torch.randint(0, 2, (teacher_width,), generator=gen).double() * 2 - 1
    x = sphere(n_train + n_test, dim, gen)
    raw = torch.relu(x @ hidden.T) @ signs / math.sqrt(teacher_width)
    # standardise with a large independent sample, so phi has mean 0 and variance 1 on S^{d-1}
    probe = sphere(20000, dim, gen)
    probe_out = torch.relu(probe @ hidden.T) @ signs / math.sqrt(teacher_width)
    phi = (raw - probe_out.mean()) / probe_out.std()
    labels = torch.where(phi >= 0, 1.0, -1.0).double()
    flips = torch.rand(n_train, generator=gen, dtype=torch.float64) < label_noise
    y_train = torch.where(flips, -labels[:n_train], labels[:n_train])
    return TeacherStudentData(
        x_train=x[:n_train],
        x_test=x[n_train:],
        teacher_train=phi[:n_train],
        teacher_test=phi[n_train:],
        y_train=y_train,
        y_test=labels[n_train:],
    )


def student_view(x: torch.Tensor, visible: int) -> torch.Tensor:
    """What a student of capacity ``visible`` sees: the first ``visible`` coordinates of ``x``,
    renormalised to unit norm, zero-padded back to ``x.shape[-1]`` columns.

    The padding changes nothing for the student (its weights on those columns get no gradient,
    and its tangent kernel is that of the visible coordinates) but lets students of all
    capacities share one replica-batched model.

    Parameters
    ----------
    x : Tensor, shape ``(n, d)``, floating point, finite, ``n >= 1``
    visible : int in ``1..d``

    Returns
    -------
    Tensor, shape ``(n, d)``
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, d) with n >= 1; got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    d = x.shape[1]
    if isinstance(visible, bool) or not isinstance(visible, int) or not 1 <= visible <= d:
        raise ValueError(f"visible must be an int in 1..{d}; got {visible!r}")
    part = x[:, :visible]
    norms = part.norm(dim=1, keepdim=True)
    if torch.any(norms == 0):
        raise ValueError("a point has all visible coordinates zero; its view is undefined")
    out = torch.zeros_like(x)
    out[:, :visible] = part / norms
    return out
