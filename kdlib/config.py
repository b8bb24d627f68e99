"""Run settings: which device, which scale, which seed.

Every experiment in the book is run at one of two *scales*:

``quick``
    Small enough for a 2-core laptop CPU (under a minute per chapter). The default, used by the
    book build and the tests.
``full``
    The papers' sizes, meant for one GPU.

Both settings are read from one place, so nobody ever edits code to change them:

* the ``scale=`` / ``device=`` argument of any experiment function, else
* the environment variables ``KDLIB_SCALE`` and ``KDLIB_DEVICE``, else
* the defaults: ``quick`` and CUDA when present (CPU otherwise).
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

SCALES = ("quick", "full")
SCALE_ENV = "KDLIB_SCALE"
DEVICE_ENV = "KDLIB_DEVICE"


def get_scale(scale: str | None = None) -> str:
    """Return the run scale: the argument, else ``$KDLIB_SCALE``, else ``"quick"``.

    Raises
    ------
    ValueError
        If the scale is not one of ``("quick", "full")``.
    """
    if scale is None:
        scale = os.environ.get(SCALE_ENV, "quick")
    if not isinstance(scale, str):
        raise TypeError(f"scale must be a string, one of {SCALES}; got {type(scale).__name__}")
    scale = scale.strip().lower()
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
    return scale


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device: the argument, else ``$KDLIB_DEVICE``, else CUDA when present, else CPU.

    Raises
    ------
    ValueError
        If the device string is not understood by torch, or CUDA is asked for but not available.
    """
    if device is None:
        device = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        try:
            resolved = torch.device(device.strip().lower())
        except RuntimeError as err:
            raise ValueError(
                f"device must be 'cpu', 'cuda' or 'cuda:<index>'; got {device!r}"
            ) from err
    else:
        raise TypeError(f"device must be a string or torch.device; got {type(device).__name__}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available on this machine")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {resolved.type!r}")
    if resolved.type == "cuda":
        exact_float32()
    return resolved


def exact_float32() -> None:
    """Keep float32 arithmetic in float32 on CUDA: no TF32 in matrix products or convolutions.

    The book's GPU tolerance (float32 results within about ``1e-4`` of the CPU's, README) assumes
    it. PyTorch keeps TF32 off for matrix products by default but lets cuDNN use it in
    convolutions (chapter 4's deep section), where it rounds inputs to 10 mantissa bits.
    :func:`get_device` calls this whenever it returns a CUDA device.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@dataclass(frozen=True)
class RunConfig:
    """The resolved settings of one run.

    Attributes
    ----------
    scale : str
        ``"quick"`` or ``"full"``.
    device : torch.device
        Where tensors live.
    seed : int
        The base seed; replicas derive their own seeds from it.
    """

    scale: str
    device: torch.device
    seed: int = 0

    @property
    def is_full(self) -> bool:
        """True at full scale."""
        return self.scale == "full"

    def pick(self, quick, full):
        """Return ``quick`` or ``full`` according to the scale (sizes per scale in one line)."""
        return full if self.is_full else quick


def resolve(
    scale: str | None = None, device: str | torch.device | None = None, seed: int = 0
) -> RunConfig:
    """Resolve scale, device and seed into a :class:`RunConfig` (see the module docstring)."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    return RunConfig(scale=get_scale(scale), device=get_device(device), seed=int(seed))


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU ``torch.Generator`` seeded the same way.

    Pass the returned generator to kdlib's initialisers and data generators: numbers drawn from it
    are identical run to run on the CPU whatever else the program draws.
    """
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)  # noqa: NPY002 - seeds legacy users of the global RNG
    torch.manual_seed(int(seed))
    return make_generator(int(seed))


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``.

    Random numbers are always drawn on the CPU and then moved, so that a seed gives the same
    initialisation and data on every device.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


def single_cpu_thread(run: Callable[..., T] | None = None, *, full_scale: bool = True):
    """Decorate an experiment ``run(config, ...)`` to use one intra-op thread on the CPU.

    The book's batched programs are many small tensor operations: on a CPU a second thread buys
    little on an idle machine, and on a shared or loaded one OpenMP's spin-waiting multiplied
    the quick-scale run time of some chapters by five to ten in our measurements. The previous
    thread count is restored afterwards; on CUDA nothing changes.

    ``@single_cpu_thread(full_scale=False)`` limits the quick scale only, for experiments whose
    full scale is a few large products (there the threads do pay).
    """

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(config: RunConfig, *args, **kwargs):
            if config.device.type != "cpu" or (config.is_full and not full_scale):
                return fn(config, *args, **kwargs)
            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return fn(config, *args, **kwargs)
            finally:
                torch.set_num_threads(previous)

        return wrapper

    return decorate if run is None else decorate(run)
