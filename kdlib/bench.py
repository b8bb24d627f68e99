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

``python -m kdlib bench --kernels`` times, instead, seven of kdlib's hot spots against the plain
version they replaced, at a size where the difference shows (each ratio is the plain version's
time over kdlib's; the last line is ``kernels_min_speedup: <ratio>``):

* **wide student step**: :func:`~kdlib.experiments.privileged_information.train_wide_student`
  handling all replicas in one pass vs its default memory-budgeted chunks (R=10, n=512, m=32768);
* **smoothed ReLU**: the multi-view network's activation with its hand-written backward and
  in-place integer powers vs the textbook formula differentiated by autograd;
* **patch network**: a forward and backward pass of the multi-view network on inputs shared by
  ten replicas (one product with every replica's filters) vs the same inputs given to each
  replica;
* **linearised step**: a loss-and-gradient step of the NTK-linearised multi-view members from
  their precomputed features (R=10, n=300, 2,048 features per class): point-major features times
  a column of weights vs ``LinearisedPatchNetwork.forward_features`` (class-major features, a row
  of weights);
* **linear student step**: a step of 500 linear students on their own inputs (n=256, d=500):
  ``torch.matmul(x, w)`` vs :func:`~kdlib.models.replica_matmul`;
* **replica CNN step**: a step of chapter 4's 24 convolutional students of two channels on 8x8
  images (three noise levels), default layout vs :class:`~kdlib.models.ReplicaCNN`'s
  channels-last activations on CPU (on CUDA both use the default layout: a ratio of 1);
* **log-softmax, 10 cls**: forward and backward of the losses' log-softmax over 10 classes (8
  students, 1,258 digit images, chapter 5's size), ``torch.log_softmax`` vs the losses' own,
  which on CPU puts the classes first when they are fewer than a vector register holds (on CUDA
  both are the plain call).

The linearised and linear student steps differ only in which side of a matrix-vector product
the vector sits on: CPU BLAS streams ``(row) x (matrix)`` much faster than
``(matrix)^T x (column)``, the form autograd uses for the weight gradient of ``x @ w``.
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


def run_size(
    name: str, device: torch.device, repeats: int | None = None, loop_subset: int | None = None
) -> Timing:
    """Time the three methods at one size (``repeats`` and ``loop_subset`` override the size's:
    fewer runs and a smaller timed part of the loop give a rougher, quicker measurement)."""
    if name not in SIZES:
        raise ValueError(f"name must be one of {sorted(SIZES)}; got {name!r}")
    spec = dict(SIZES[name])
    for key, value in (("repeats", repeats), ("loop_subset", loop_subset)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int; got {value!r}")
        spec[key] = min(value, spec["replicas"]) if key == "loop_subset" else value
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


KERNEL_SIZES = {
    "wide": {"replicas": 10, "n": 512, "d": 64, "width": 32768, "steps": 3},
    "relu": {"rows": 60000, "cols": 800, "repeats": 3},
    "patch": {"replicas": 10, "n": 1500, "patches": 40, "dim": 256, "classes": 10, "width": 8},
    "linearised": {"replicas": 10, "n": 300, "dim": 256, "classes": 10, "width": 8},
    "linear": {"replicas": 500, "n": 256, "d": 500, "k": 1},
    "cnn": {"replicas": 24, "groups": 3, "n": 100, "side": 8, "channels": 2, "classes": 10},
    "log_softmax": {"replicas": 8, "n": 1258, "classes": 10, "repeats": 20},
}


def _best_of(fn, device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _bench_wide_student(device: torch.device) -> tuple[float, float]:
    from .experiments.privileged_information import train_wide_student

    spec = KERNEL_SIZES["wide"]
    r, n, d = spec["replicas"], spec["n"], spec["d"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(r, n, d, generator=gen)
    x = (x / x.norm(dim=-1, keepdim=True)).to(device)
    target = torch.randn(r, n, generator=gen).to(device)
    lr = torch.full((r,), 0.5, device=device)

    def run(chunk: int | None) -> None:
        model = TwoLayerReLU(r, d, spec["width"], symmetric_init=True, seed=0, device=device)
        train_wide_student(model, x, target, lr, spec["steps"], kernel_every=10**9, chunk=chunk)

    return _best_of(lambda: run(r), device, 1), _best_of(lambda: run(None), device, 1)


def _bench_smoothed_relu(device: torch.device) -> tuple[float, float]:
    from .experiments.multi_view import smoothed_relu

    spec = KERNEL_SIZES["relu"]
    z = torch.randn(spec["rows"], spec["cols"], device=device, requires_grad=True)
    rho, q = 1.0, 4

    def textbook() -> None:
        out = (z.clamp(0, rho) / rho) ** q * (rho / q) + (z - rho).clamp(min=0)
        out.sum().backward()

    def kdlib_version() -> None:
        smoothed_relu(z, rho, q).sum().backward()

    return (
        _best_of(textbook, device, spec["repeats"]),
        _best_of(kdlib_version, device, spec["repeats"]),
    )


def _bench_patch_network(device: torch.device) -> tuple[float, float]:
    from .experiments.multi_view import PatchNetwork

    spec = KERNEL_SIZES["patch"]
    r = spec["replicas"]
    net = PatchNetwork(r, spec["classes"], spec["width"], spec["dim"], 0.08, 1.0, 4, seed=0)
    net = net.to(device)
    gen = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(spec["n"], spec["patches"], spec["dim"], generator=gen)).to(device)
    copies = x.expand(r, *x.shape)

    def step(inputs: torch.Tensor) -> None:
        net.zero_grad()
        net(inputs).square().mean().backward()

    return _best_of(lambda: step(copies), device, 2), _best_of(lambda: step(x), device, 2)


def _bench_linearised_step(device: torch.device) -> tuple[float, float]:
    """One loss-and-gradient step of the NTK-linearised members from precomputed features:
    point-major features ``(R, n, k, F)`` times a column ``delta`` (the plain version) against
    :meth:`LinearisedPatchNetwork.forward_features` (class-major features, row ``delta``)."""
    from .experiments.multi_view import LinearisedPatchNetwork, PatchNetwork

    spec = KERNEL_SIZES["linearised"]
    r, n, k, m, d = spec["replicas"], spec["n"], spec["classes"], spec["width"], spec["dim"]
    net = PatchNetwork(r, k, m, d, 0.08, 1.0, 4, seed=0).to(device)
    linear = LinearisedPatchNetwork(net)
    gen = torch.Generator().manual_seed(0)
    class_major = torch.randn(r, k, n, m, d, generator=gen).to(device)
    point_major = class_major.transpose(1, 2).contiguous().reshape(r, n, k, m * d)
    logits0 = torch.zeros(r, n, k, device=device)

    def plain() -> None:
        linear.delta.grad = None
        column = linear.delta.reshape(r, k, -1, 1)
        out = logits0 + torch.matmul(point_major.transpose(1, 2), column)[..., 0].transpose(1, 2)
        out.square().sum().backward()

    def kdlib_version() -> None:
        linear.delta.grad = None
        linear.forward_features(class_major, logits0).square().sum().backward()

    return _best_of(plain, device, 3), _best_of(kdlib_version, device, 3)


def _bench_linear_student(device: torch.device) -> tuple[float, float]:
    """A loss-and-gradient step of many linear students (chapter 3's replicas):
    ``torch.matmul(x, w)`` against :func:`kdlib.models.replica_matmul`."""
    from .models import replica_matmul

    spec = KERNEL_SIZES["linear"]
    r, n, d, k = spec["replicas"], spec["n"], spec["d"], spec["k"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(r, n, d, generator=gen).to(device)
    weight = torch.zeros(r, d, k, device=device, requires_grad=True)

    def step(product) -> None:
        weight.grad = None
        product(x, weight).square().sum().backward()

    return _best_of(lambda: step(torch.matmul), device, 3), _best_of(
        lambda: step(replica_matmul), device, 3
    )


def _bench_replica_cnn(device: torch.device) -> tuple[float, float]:
    """A loss-and-gradient step of chapter 4's convolutional students (noise levels x seeds x
    kinds as replicas, two channels each) in the default layout vs :class:`ReplicaCNN`'s own
    choice (channels-last on CPU)."""
    from .models import ReplicaCNN

    spec = KERNEL_SIZES["cnn"]
    r, groups, n, side = spec["replicas"], spec["groups"], spec["n"], spec["side"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(groups, n, 1, side, side, generator=gen).to(device)
    shape = dict(in_channels=1, channels=spec["channels"], image_size=(side, side))
    args = dict(classes=spec["classes"], input_groups=groups, seed=0, device=device, **shape)
    plain, ours = ReplicaCNN(r, channels_last=False, **args), ReplicaCNN(r, **args)

    def step(model: ReplicaCNN) -> None:
        model.zero_grad()
        model(x).square().mean().backward()

    return _best_of(lambda: step(plain), device, 3), _best_of(lambda: step(ours), device, 3)


def _bench_log_softmax(device: torch.device) -> tuple[float, float]:
    """Forward and backward of a log-softmax over 10 classes at chapter 5's digits size (8
    students, 1,258 images): ``torch.log_softmax`` against the losses' own
    (:func:`kdlib.losses.log_softmax`: class-first on CPU)."""
    from .losses import log_softmax

    spec = KERNEL_SIZES["log_softmax"]
    gen = torch.Generator().manual_seed(0)
    shape = (spec["replicas"], spec["n"], spec["classes"])
    logits = torch.randn(*shape, generator=gen).to(device).requires_grad_(True)
    weights = torch.randn(*shape, generator=gen).to(device)

    def steps(log_softmax) -> None:
        for _ in range(spec["repeats"]):
            (grad,) = torch.autograd.grad((log_softmax(logits) * weights).sum(), logits)

    return _best_of(lambda: steps(lambda z: torch.log_softmax(z, -1)), device, 3), _best_of(
        lambda: steps(log_softmax), device, 3
    )


def kernels_main(device: str | None = None) -> int:
    """Print the hot-spot table; last line ``kernels_min_speedup: <ratio>``."""
    dev = get_device(device)
    print(f"device: {dev}  ({torch.get_num_threads()} threads)")
    print(f"{'hot spot':20s} {'plain s':>9s} {'kdlib s':>9s} {'plain/kdlib':>12s}")
    ratios = []
    for name, bench in (
        ("wide student step", _bench_wide_student),
        ("smoothed ReLU", _bench_smoothed_relu),
        ("patch network", _bench_patch_network),
        ("linearised step", _bench_linearised_step),
        ("linear student step", _bench_linear_student),
        ("replica CNN step", _bench_replica_cnn),
        ("log-softmax, 10 cls", _bench_log_softmax),
    ):
        plain, ours = bench(dev)
        ratios.append(plain / ours)
        print(f"{name:20s} {plain:9.3f} {ours:9.3f} {plain / ours:11.2f}x")
    print(f"kernels_min_speedup: {min(ratios):.2f}")
    return 0


def main(device: str | None = None, sizes=("small", "large")) -> int:
    """Print the benchmark table; last line ``speedup_vs_loop: <ratio>`` (small size)."""
    dev = get_device(device)  # on CUDA, TF32 off (kdlib.config.exact_float32)
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
