"""Batched gradient descent for replica models.

:func:`train` runs plain (full-batch) gradient descent, or mini-batch SGD, on a model whose
parameters all have a leading replica axis ``R``. The loss function returns one loss per replica,
shape ``(R,)``; the trainer sums them before ``backward`` so replicas never share gradients, and
the learning rate may differ per replica (a hyper-parameter sweep in one program).

Design notes
------------
* Recorded values stay on the device during training and are copied to the CPU once at the end,
  so the loop has no host-device synchronisation (what makes it fast on a GPU).
* ``Ctrl-C`` (``KeyboardInterrupt``) stops training cleanly: the result holds every step finished
  so far and ``interrupted=True``; the model keeps its current weights.
* With a ``checkpoint`` (:func:`kdlib.cache.training_checkpoint`, under ``reproduce``) the run
  saves its state every couple of minutes, when interrupted and when done, and a new run with the
  same checkpoint starts from the saved step. Full-batch steps are deterministic and the SGD
  generator's state is saved too, so on the CPU a resumed run is bitwise the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .cache import TrainingCheckpoint

__all__ = [
    "TrainResult",
    "train",
    "train_chunked",
    "auto_chunk_size",
    "slice_replicas",
    "replica_parameters",
    "interrupts_propagate",
    "interrupt_between_updates",
]

_PROPAGATE_INTERRUPT: ContextVar[bool] = ContextVar("kdlib_propagate_interrupt", default=False)


@contextlib.contextmanager
def interrupts_propagate() -> Iterator[None]:
    """Inside this block, ``Ctrl-C`` during :func:`train` is re-raised instead of ending training
    early. Used by ``python -m kdlib reproduce`` so that a half-trained result is never cached."""
    token = _PROPAGATE_INTERRUPT.set(True)
    try:
        yield
    finally:
        _PROPAGATE_INTERRUPT.reset(token)


#: Whether :func:`train` is updating weights now, and whether a signal arrived meanwhile.
_UPDATE = {"running": False, "interrupt_pending": False}


def interrupt_between_updates(signum=None, frame=None) -> None:
    """A signal handler (``SIGINT``, ``SIGTERM``) that raises ``KeyboardInterrupt`` at once, or,
    while :func:`train` is updating weights, right after the update: the state saved in a
    checkpoint is then never half updated. Installed by ``python -m kdlib reproduce``."""
    if _UPDATE["running"]:
        _UPDATE["interrupt_pending"] = True
        return
    raise KeyboardInterrupt(f"signal {signum}")


LossFn = Callable[[nn.Module, torch.Tensor | None], torch.Tensor]
MetricsFn = Callable[[nn.Module], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    """What a training run recorded.

    Attributes
    ----------
    steps : ndarray, shape ``(T,)``
        The step numbers at which values were recorded (0 = before the first update).
    loss : Tensor, shape ``(T, R)``
        Training loss per replica at those steps (CPU). With SGD, the rows recorded during
        training are mini-batch losses; the last row, after the final update, is the full-batch
        loss.
    metrics : dict of Tensor, each ``(T, R)``
        Values returned by ``metrics_fn`` at those steps (CPU).
    interrupted : bool
        True if training was stopped by ``KeyboardInterrupt`` before ``steps`` updates.
    steps_done : int
        Number of updates performed.
    """

    steps: np.ndarray
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    interrupted: bool = False
    steps_done: int = 0

    @property
    def final_loss(self) -> torch.Tensor:
        """Loss per replica at the last recorded step, shape ``(R,)``."""
        return self.loss[-1]


def replica_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of ``model``, checked to share one leading replica axis."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    replicas = params[0].shape[0]
    for p in params:
        if p.dim() < 1 or p.shape[0] != replicas:
            raise ValueError(
                "every trainable parameter must have the replica axis first; got shapes "
                f"{[tuple(q.shape) for q in params]}"
            )
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise ValueError(f"model parameters are on several devices: {sorted(map(str, devices))}")
    return params


def _learning_rates(lr, replicas: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(lr, bool):
        raise TypeError("lr must be a positive float or a tensor of shape (R,)")
    if isinstance(lr, int | float):
        lr = torch.full((replicas,), float(lr))
    if not isinstance(lr, torch.Tensor):
        raise TypeError(
            f"lr must be a positive float or a tensor of shape (R,); got {type(lr).__name__}"
        )
    if lr.shape != (replicas,):
        raise ValueError(f"lr must be a scalar or have shape ({replicas},); got {tuple(lr.shape)}")
    if not (torch.isfinite(lr).all() and (lr > 0).all()):
        raise ValueError("lr must be finite and > 0")
    return lr.to(device=like.device, dtype=like.dtype)


def train(
    model: nn.Module,
    loss_fn: LossFn,
    steps: int,
    lr: float | torch.Tensor,
    *,
    record_every: int = 1,
    metrics_fn: MetricsFn | None = None,
    batch_size: int | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    weight_decay: float = 0.0,
    progress: bool | None = None,
    desc: str = "training",
    checkpoint: TrainingCheckpoint | None = None,
) -> TrainResult:
    """Train all replicas of ``model`` by gradient descent, in one batched program.

    Parameters
    ----------
    model : nn.Module
        Every trainable parameter has shape ``(R, ...)``.
    loss_fn : callable ``(model, batch) -> Tensor (R,)``
        Per-replica loss. ``batch`` is ``None`` for full-batch gradient descent, or a LongTensor of
        ``batch_size`` sample indices (shared by all replicas) for SGD.
    steps : int
        Number of updates.
    lr : float or Tensor of shape ``(R,)``
        Step size, the same for all replicas or one per replica.
    record_every : int
        Record loss and metrics every this many steps (and at the first and last step).
    metrics_fn : callable ``model -> dict[str, Tensor (R,)]``, optional
        Extra quantities to record (risk, distance to a closed form...), evaluated without grad.
    batch_size, n_samples : int, optional
        Mini-batch SGD: sample ``batch_size`` of ``n_samples`` indices without replacement each
        step (from ``generator``). Both or neither.
    weight_decay : float
        Adds ``weight_decay * p`` to every gradient (L2 regularisation ``wd/2 ||p||^2``).
    progress : bool, optional
        Show a tqdm bar. Default: only for runs of at least 2000 steps.
    checkpoint : TrainingCheckpoint, optional
        Save the run's state there as it goes (weights, step, records, SGD generator) and start
        from the state saved there, if any, by the same run stopped earlier.

    Returns
    -------
    TrainResult
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int; got {steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be a positive int; got {record_every!r}")
    if not (isinstance(weight_decay, numbers.Real) and math.isfinite(weight_decay)) or (
        weight_decay < 0
    ):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
    if (batch_size is None) != (n_samples is None):
        raise ValueError("pass both batch_size and n_samples for SGD, or neither")
    if batch_size is not None and not 1 <= batch_size <= n_samples:
        raise ValueError(f"batch_size must be in 1..n_samples={n_samples}; got {batch_size}")
    if checkpoint is not None and not isinstance(checkpoint, TrainingCheckpoint):
        raise TypeError(
            f"checkpoint must be a kdlib.cache.TrainingCheckpoint or None; got {type(checkpoint)}"
        )
    params = replica_parameters(model)
    replicas = params[0].shape[0]
    rates = _learning_rates(lr, replicas, params[0])
    rate_views = [rates.view(-1, *([1] * (p.dim() - 1))) for p in params]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    show = progress if progress is not None else steps >= 2000

    recorded_steps: list[int] = []
    recorded_loss: list[torch.Tensor] = []
    recorded_metrics: dict[str, list[torch.Tensor]] = {}

    def record(step: int, loss: torch.Tensor) -> None:
        metrics = {}
        if metrics_fn is not None:  # computed first: an interrupt here leaves no partial row
            with torch.no_grad():
                metrics = {key: value.detach() for key, value in metrics_fn(model).items()}
        recorded_steps.append(step)
        recorded_loss.append(loss.detach())
        for key, value in metrics.items():
            recorded_metrics.setdefault(key, []).append(value)

    def batch_loss() -> torch.Tensor:
        if batch_size is None:
            batch = None
        else:
            batch = torch.randperm(n_samples, generator=gen)[:batch_size].to(params[0].device)
        loss = loss_fn(model, batch)
        if loss.shape != (replicas,):
            raise ValueError(f"loss_fn must return shape ({replicas},); got {tuple(loss.shape)}")
        return loss

    def snapshot(generator_state: torch.Tensor) -> dict:
        """The run's state after ``done`` updates (``generator_state``: the SGD generator's).

        Records of the step in progress (step ``done``, recorded before an interrupt stopped its
        update) are left out: the resumed run records that step again."""
        kept = sum(1 for s in recorded_steps if s < done)
        return {
            "steps": steps,
            "done": done,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "recorded_steps": list(recorded_steps[:kept]),
            "recorded_loss": [v.cpu() for v in recorded_loss[:kept]],
            "recorded_metrics": {
                k: [v.cpu() for v in vs[:kept]] for k, vs in recorded_metrics.items()
            },
            "generator": generator_state,
        }

    done, interrupted = 0, False
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        done = _restore(saved, steps, model, gen, params[0].device)
        recorded_steps.extend(saved["recorded_steps"])
        recorded_loss.extend(v.to(params[0].device) for v in saved["recorded_loss"])
        for key, values in saved["recorded_metrics"].items():
            recorded_metrics[key] = [v.to(params[0].device) for v in values]
    # Outside the update block, the weights and ``generator_at_done`` are the state after ``done``
    # updates: an interrupt there is saved exactly. Signals handled by
    # `interrupt_between_updates` (under `reproduce`) wait for the block to end; any other
    # interrupt inside it (weights half updated) is not saved, and the run would resume from its
    # last periodic save.
    generator_at_done, updating = gen.get_state(), False
    bar = tqdm(total=steps, initial=done, desc=desc, disable=not show, leave=False)
    try:
        for step in range(done, steps):
            loss = batch_loss()
            if step % record_every == 0:
                record(step, loss)
            grads = torch.autograd.grad(loss.sum(), params)
            updating = _UPDATE["running"] = True
            try:
                with torch.no_grad():
                    for p, g, rate in zip(params, grads, rate_views, strict=True):
                        if weight_decay:
                            g = g + weight_decay * p
                        p.sub_(rate * g)
                done = step + 1
                if checkpoint is not None:
                    generator_at_done = gen.get_state()
                updating = False
            finally:
                _UPDATE["running"] = False
            if _UPDATE["interrupt_pending"]:  # a signal came during the update: stop here
                _UPDATE["interrupt_pending"] = False
                raise KeyboardInterrupt
            bar.update(1)
            if checkpoint is not None and done < steps and checkpoint.due():
                checkpoint.save(snapshot(generator_at_done))
    except KeyboardInterrupt:
        if checkpoint is not None and not updating:
            checkpoint.save(snapshot(generator_at_done))
        if _PROPAGATE_INTERRUPT.get():
            raise
        interrupted = True
    finally:
        bar.close()
    if checkpoint is not None and not interrupted and (saved is None or saved["done"] < steps):
        checkpoint.save(
            snapshot(generator_at_done)
        )  # kept until the result that needed it is stored
    with torch.no_grad():
        final = batch_loss() if batch_size is None else loss_fn(model, None)
    if not recorded_steps or recorded_steps[-1] != done:
        record(done, final)
    return TrainResult(
        steps=np.asarray(recorded_steps),
        loss=torch.stack(recorded_loss).cpu(),
        metrics={k: torch.stack(v).cpu() for k, v in recorded_metrics.items()},
        interrupted=interrupted,
        steps_done=done,
    )


def _restore(
    saved: dict, steps: int, model: nn.Module, gen: torch.Generator, device: torch.device
) -> int:
    """Load a checkpoint's weights and generator state into ``model`` and ``gen``; returns the
    step it reached."""
    if saved.get("steps") != steps:
        raise ValueError(
            f"the checkpoint was saved by a run of {saved.get('steps')} steps, not {steps}: "
            "a checkpoint's inputs must name everything the run depends on"
        )
    model.load_state_dict({k: v.to(device) for k, v in saved["model"].items()})
    gen.set_state(saved["generator"])
    return int(saved["done"])


def available_memory(device: torch.device) -> int:
    """Free memory in bytes on ``device`` (CUDA: free device memory; CPU: ``MemAvailable``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_chunk_size(
    replicas: int, bytes_per_replica: int, device: torch.device, budget: float = 0.5
) -> int:
    """How many replicas fit in ``budget`` (a fraction) of the free memory of ``device``.

    ``bytes_per_replica`` should count parameters, gradients and the forward activations of one
    replica (e.g. ``4 * n * width`` bytes of hidden activations in float32).
    """
    if bytes_per_replica <= 0:
        raise ValueError(f"bytes_per_replica must be > 0; got {bytes_per_replica}")
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be in (0, 1]; got {budget}")
    fits = int(available_memory(device) * budget // bytes_per_replica)
    return max(1, min(replicas, fits))


def slice_replicas(
    model: nn.Module, start: int, stop: int, device: torch.device | str | None = None
) -> nn.Module:
    """A copy of ``model`` holding replicas ``start:stop`` of every parameter, on ``device``
    (default: where ``model`` lives); ``model`` itself is not changed.

    Replicas are independent, so a slice trains and predicts exactly like those replicas of the
    whole model: the way to run a batch of replicas that does not fit in memory, in pieces.
    """
    import copy

    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to slice")
    _check_sliceable(model)
    replicas = params[0].shape[0]
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= replicas):
        raise ValueError(f"need 0 <= start < stop <= {replicas} replicas; got {start}:{stop}")
    device = params[0].device if device is None else torch.device(device)

    # Deep-copy the structure without copying the (possibly large) parameters.
    memo = {id(p): nn.Parameter(torch.empty(0, device="meta")) for p in model.parameters()}
    chunk = copy.deepcopy(model, memo)
    for name, full in model.named_parameters():
        owner, _, attr = name.rpartition(".")
        module = chunk.get_submodule(owner) if owner else chunk
        sliced = full.detach()[start:stop].to(device).clone()
        setattr(module, attr, nn.Parameter(sliced, requires_grad=full.requires_grad))
    if hasattr(chunk, "replicas"):
        chunk.replicas = stop - start
    return chunk


def _check_sliceable(model: nn.Module) -> None:
    """Models whose replicas share inputs in groups cannot be sliced replica by replica."""
    groups = getattr(model, "input_groups", 1)
    if groups != 1:
        raise ValueError(
            f"cannot slice the replicas of a model with input_groups={groups}: a slice would "
            "spread its replicas over all the input groups; train it whole, or build one model "
            "per input group"
        )


def train_chunked(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Tensor | None, slice], torch.Tensor],
    steps: int,
    lr: float | torch.Tensor,
    *,
    chunk_size: int | None = None,
    bytes_per_replica: int | None = None,
    device: torch.device | str | None = None,
    **train_kwargs,
) -> TrainResult:
    """Train the replicas of ``model`` in chunks that fit in memory; same result as one chunk.

    Replicas are independent, so training ``model`` chunk by chunk (each chunk copied to
    ``device``, trained, and written back into ``model``) gives the same weights as training all
    at once. ``loss_fn(chunk_model, batch, replicas)`` receives the ``slice`` of replicas in the
    chunk, to select per-replica data or masks.

    Parameters
    ----------
    chunk_size : int, optional
        Replicas per chunk. Default: :func:`auto_chunk_size` from ``bytes_per_replica`` (required
        then), or all replicas at once if neither is given.
    device : optional
        Where chunks are trained (default: where ``model`` lives).
    train_kwargs :
        Passed to :func:`train` (``record_every``, ``metrics_fn``, ``generator``, ...). Metrics are
        concatenated along the replica axis. Every chunk starts from the same state of
        ``generator``, so SGD draws the mini-batches one whole run would. ``checkpoint`` is not
        accepted: one checkpoint cannot hold several chunks.

    Returns
    -------
    TrainResult
        If a chunk is interrupted, the chunks after it are not trained; the result then holds
        the chunks trained so far, with ``interrupted=True``, and its loss and metrics cover only
        their replicas (``steps_done`` is the interrupted chunk's).
    """
    if "checkpoint" in train_kwargs:
        raise ValueError(
            "train_chunked does not take a checkpoint (one checkpoint cannot hold several "
            "chunks); checkpoint each chunk's train() call instead"
        )
    params = list(model.parameters())
    replicas = params[0].shape[0]
    target = torch.device(device) if device is not None else params[0].device
    if chunk_size is None:
        chunk_size = (
            auto_chunk_size(replicas, bytes_per_replica, target) if bytes_per_replica else replicas
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    rates = lr if isinstance(lr, torch.Tensor) else None
    generator = train_kwargs.get("generator")
    generator_start = generator.get_state() if generator is not None else None
    results = []
    for start in range(0, replicas, chunk_size):
        stop = min(start + chunk_size, replicas)
        if generator is not None:
            generator.set_state(generator_start)
        chunk = slice_replicas(model, start, stop, target)
        part = slice(start, stop)
        chunk_lr = rates[part] if rates is not None else lr
        results.append(
            train(
                chunk,
                lambda m, batch, p=part: loss_fn(m, batch, p),
                steps,
                chunk_lr,
                **train_kwargs,
            )
        )
        with torch.no_grad():
            for full, trained in zip(params, chunk.parameters(), strict=True):
                full[start:stop] = trained.to(full.device)
        if results[-1].interrupted:
            break
    rows = min(len(r.steps) for r in results)  # an interrupted chunk recorded fewer steps
    return TrainResult(
        steps=results[-1].steps[:rows],
        loss=torch.cat([r.loss[:rows] for r in results], dim=1),
        metrics={
            k: torch.cat([r.metrics[k][:rows] for r in results], dim=1) for k in results[0].metrics
        },
        interrupted=any(r.interrupted for r in results),
        steps_done=min(r.steps_done for r in results),
    )
