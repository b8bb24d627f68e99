"""Benchmark: R independent students trained three ways on the current device.

1. **loop**: a Python loop over ``nn.Module`` students, each with its own optimizer (what most
   users write);
2. **vmap**: ``torch.func.vmap`` over stacked parameters (PyTorch's model-ensembling recipe:
   ``stack_module_state`` + ``functional_call`` + ``grad``);
3. **kdlib**: one :class:`~kdlib.models.TwoLayerReLU` with a leading replica axis, trained by
   :func:`kdlib.train.train`.

The work is identical: two-layer ReLU students in NTK parametrisation (fixed second layer), binary
cross-entropy on soft targets, full-batch gradient descent, 100 steps. Sizes:

* small: n=64 examples, d=16, width 32, R=128;
* large: n=1024, d=32, width 128, R=1024 (the loop is timed on a subset of replicas and
  extrapolated linearly, since its cost is linear in R).

Each method is timed after a warm-up; at the small size each reports the best of three runs (on a
shared machine, timer noise only ever adds time), at the large size a single run.

Run with ``python -m kdlib bench``. The last line is ``speedup_vs_loop: <ratio>`` (kdlib vs the loop
at the small size). The FP32 FLOP rate of kdlib at the large size is reported from the matmul FLOPs
(TF32 disabled on CUDA).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from .config import get_device
from .losses import binary_cross_entropy
from .models import TwoLayerReLU
from .train import train

SIZES = {
    "small": {"n": 64, "d": 16, "width": 32, "replicas": 128, "loop_subset": 128, "repeats": 3},
    "large": {"n": 1024, "d": 32, "width": 128, "replicas": 1024, "loop_subset": 32, "repeats": 1},
}
STEPS = 100
LR = 0.5


@dataclass
class Timing:
    """Seconds per method for one size (the loop possibly extrapolated)."""

    size: str
    loop: float
    vmap: float
    kdlib: float
    flops: float  # matmul FLOPs of the kdlib run


class _Student(nn.Module):
    def __init__(self, d: int, width: int, hidden: torch.Tensor, output: torch.Tensor):
        super().__init__()
        self.hidden = nn.Parameter(hidden.clone())  # (width, d)
        self.register_buffer("output", output.clone())  # (width,)
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.hidden.T) @ self.output * self.scale


def _problem(n: int, d: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen).to(device)
    targets = torch.sigmoid(x @ torch.randn(d, generator=gen).to(device))
    return x, targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loop(model: TwoLayerReLU, x, targets, replicas: int) -> float:
    """Seconds for ``replicas`` students trained one after another with ``torch.optim.SGD``."""
    device = x.device
    students = [
        _Student(x.shape[1], model.width, model.hidden[r], model.output[r, :, 0])
        for r in range(replicas)
    ]
    _sync(device)
    start = time.perf_counter()
    for student in students:
        optimizer = torch.optim.SGD(student.parameters(), lr=LR)
        for _ in range(STEPS):
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(student(x), targets)
            loss.backward()
            optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def time_vmap(model: TwoLayerReLU, x, targets) -> float:
    """Seconds for all students with ``torch.func.vmap`` over stacked parameters."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    device = x.device
    students = [
        _Student(x.shape[1], model.width, model.hidden[r], model.output[r, :, 0])
        for r in range(model.replicas)
    ]
    params, buffers = stack_module_state(students)
    base = students[0]

    def loss_fn(p, b):
        logits = functional_call(base, (p, b), (x,))
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)

    step_grad = vmap(grad(loss_fn))
    params = {k: v.detach() for k, v in params.items()}
    _sync(device)
    start = time.perf_counter()
    for _ in range(STEPS):
        grads = step_grad(params, buffers)
        params = {k: v - LR * grads[k] for k, v in params.items()}
    _sync(device)
    return time.perf_counter() - start


def time_kdlib(model: TwoLayerReLU, x, targets) -> float:
    """Seconds for all students as one replica-batched model."""
    device = x.device
    _sync(device)
    start = time.perf_counter()
    train(
        model,
        lambda m, _: binary_cross_entropy(m(x), targets, check=False),
        STEPS,
        LR,
        record_every=STEPS,
        progress=False,
    )
    _sync(device)
    return time.perf_counter() - start


def run_size(name: str, device: torch.device) -> Timing:
    """Time the three methods at one size."""
    spec = SIZES[name]
    x, targets = _problem(spec["n"], spec["d"], device)

    def fresh() -> TwoLayerReLU:
        return TwoLayerReLU(spec["replicas"], spec["d"], spec["width"], seed=1, device=device)

    time_kdlib(fresh(), x, targets)  # warm-up (allocator, kernels)
    repeats = spec["repeats"]  # each method: the best of `repeats` runs (timer noise is one-sided)
    kd = min(time_kdlib(fresh(), x, targets) for _ in range(repeats))
    vm = min(time_vmap(fresh(), x, targets) for _ in range(repeats))
    subset = spec["loop_subset"]
    loop = min(time_loop(fresh(), x, targets, subset) for _ in range(repeats))
    loop *= spec["replicas"] / subset
    n, d, m, r = spec["n"], spec["d"], spec["width"], spec["replicas"]
    # forward x V^T (2 n d m) and h a (2 n m); backward dV = g^T x (2 n m d) and dh = g a^T (2 n m)
    flops = STEPS * r * (4 * n * d * m + 4 * n * m)
    return Timing(name, loop, vm, kd, float(flops))


def main(device: str | None = None, sizes=("small", "large")) -> int:
    """Print the benchmark table; last line ``speedup_vs_loop: <ratio>`` (small size)."""
    dev = get_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise ValueError(f"sizes must be among {sorted(SIZES)}; got {unknown}")
    print(
        f"device: {dev}  ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}, "
        f"{torch.get_num_threads()} threads)  steps: {STEPS}"
    )
    print(
        f"{'size':6s} {'loop s':>9s} {'vmap s':>9s} {'kdlib s':>9s} {'kdlib/loop':>11s} "
        f"{'kdlib/vmap':>11s} {'kdlib GFLOP/s':>14s}"
    )
    results = {}
    for name in sizes:
        t = run_size(name, dev)
        results[name] = t
        print(
            f"{name:6s} {t.loop:9.3f} {t.vmap:9.3f} {t.kdlib:9.3f} {t.loop / t.kdlib:10.1f}x "
            f"{t.vmap / t.kdlib:10.1f}x {t.flops / t.kdlib / 1e9:14.1f}"
        )
    if "large" in results:
        print(
            "(large: loop extrapolated from "
            f"{SIZES['large']['loop_subset']} of {SIZES['large']['replicas']} replicas)"
        )
    reference = results.get("small") or next(iter(results.values()))
    print(f"speedup_vs_loop: {reference.loop / reference.kdlib:.1f}")
    return 0
