"""The batched trainer against closed forms and hand-written gradient descent."""

import pytest
import torch

from kdlib.cache import ResultCache, TrainingCheckpoint
from kdlib.losses import binary_cross_entropy
from kdlib.models import LinearStudent, ReplicaCNN
from kdlib.train import slice_replicas, train, train_chunked


def _least_squares_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    return x, y


def test_gradient_descent_reaches_the_least_squares_solution():
    x, y = _least_squares_problem()
    model = LinearStudent(2, 4, dtype=torch.float64)

    def loss_fn(m, batch):
        return ((m(x)[..., 0] - y) ** 2).mean(-1) / 2

    result = train(model, loss_fn, 2000, lr=0.5)
    solution = torch.linalg.lstsq(x, y[:, None]).solution
    assert torch.allclose(model.weight[0], solution, atol=1e-8)
    assert result.loss.shape[1] == 2 and result.steps[-1] == 2000
    assert result.loss[-1, 0] < result.loss[0, 0]


def test_one_step_equals_hand_written_update():
    x, y = _least_squares_problem()
    model = LinearStudent(1, 4, init="normal", seed=1, dtype=torch.float64)
    w0 = model.weight.detach().clone()[0, :, 0]
    t = torch.sigmoid(y)

    def loss_fn(m, batch):
        return binary_cross_entropy(m(x), t)

    train(model, loss_fn, 1, lr=0.1)
    hand_grad = x.T @ (torch.sigmoid(x @ w0) - t) / len(y)
    assert torch.allclose(model.weight[0, :, 0], w0 - 0.1 * hand_grad, atol=1e-14)


def test_metrics_recorded_and_weight_decay():
    x, y = _least_squares_problem()
    model = LinearStudent(3, 4, dtype=torch.float64)

    def loss_fn(m, batch):
        return ((m(x)[..., 0] - y) ** 2).mean(-1) / 2

    result = train(
        model,
        loss_fn,
        100,
        lr=0.2,
        record_every=10,
        weight_decay=1.0,
        metrics_fn=lambda m: {"norm": m.weight.norm(dim=(1, 2))},
    )
    assert result.metrics["norm"].shape == (11, 3)
    ridge = torch.linalg.solve(x.T @ x / 30 + torch.eye(4, dtype=torch.float64), x.T @ y / 30)
    train(model, loss_fn, 3000, lr=0.2, weight_decay=1.0)
    assert torch.allclose(model.weight[1, :, 0], ridge, atol=1e-8)


def test_sgd_uses_batches_and_is_seeded():
    x, y = _least_squares_problem()
    seen = []

    def loss_fn(m, batch):
        if batch is not None:
            seen.append(batch.clone())
            return ((m(x[batch])[..., 0] - y[batch]) ** 2).mean(-1)
        return ((m(x)[..., 0] - y) ** 2).mean(-1)

    runs = []
    for _ in range(2):
        model = LinearStudent(1, 4, dtype=torch.float64)
        train(
            model,
            loss_fn,
            5,
            0.1,
            batch_size=8,
            n_samples=30,
            generator=torch.Generator().manual_seed(3),
        )
        runs.append(model.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert all(len(b) == 8 for b in seen)


def test_keyboard_interrupt_keeps_finished_steps():
    x, y = _least_squares_problem()
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return ((m(x)[..., 0] - y) ** 2).mean(-1)

    result = train(LinearStudent(1, 4, dtype=torch.float64), loss_fn, 100, 0.1)
    assert result.interrupted and result.steps_done == 5
    assert result.steps[-1] == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": -1}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"lr": torch.ones(3)}, "lr"),
        ({"record_every": 0}, "record_every"),
        ({"batch_size": 4}, "batch_size"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_arguments(kwargs, match):
    x, y = _least_squares_problem()
    args = {"steps": 1, "lr": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        train(LinearStudent(2, 4, dtype=torch.float64), lambda m, b: m(x).sum((1, 2)), **args)


def test_loss_of_wrong_shape_is_rejected():
    x, _ = _least_squares_problem()
    with pytest.raises(ValueError, match="loss_fn"):
        train(LinearStudent(2, 4, dtype=torch.float64), lambda m, b: m(x).sum(), 1, 0.1)


def _chunk_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g)
    y = (x[:, 0] > 0).float()

    def loss_fn(model, batch, replicas=None):
        rows = slice(None) if batch is None else batch
        return binary_cross_entropy(model(x[rows]), y[rows])

    return loss_fn


def test_chunked_sgd_with_a_callers_generator_draws_the_batches_of_one_run():
    loss_fn = _chunk_problem()
    sgd = dict(batch_size=4, n_samples=20)
    whole = LinearStudent(4, 3, init="normal", seed=3)
    train(whole, loss_fn, 10, 0.1, generator=torch.Generator().manual_seed(5), **sgd)
    chunked = LinearStudent(4, 3, init="normal", seed=3)
    train_chunked(
        chunked, loss_fn, 10, 0.1, chunk_size=2, generator=torch.Generator().manual_seed(5), **sgd
    )
    torch.testing.assert_close(chunked.weight, whole.weight, rtol=0, atol=1e-6)


def test_train_chunked_refuses_a_checkpoint(tmp_path):
    checkpoint = TrainingCheckpoint(ResultCache(tmp_path), "t", "k")
    with pytest.raises(ValueError, match="checkpoint"):
        train_chunked(LinearStudent(4, 3), _chunk_problem(), 5, 0.1, checkpoint=checkpoint)


def test_an_interrupted_chunk_returns_the_chunks_trained_so_far():
    loss_fn = _chunk_problem()
    calls = []

    def stopping(model, batch, replicas):
        calls.append(replicas)
        if replicas.start == 2 and len([c for c in calls if c.start == 2]) == 4:
            raise KeyboardInterrupt
        return loss_fn(model, batch)

    result = train_chunked(LinearStudent(6, 3), stopping, 10, 0.1, chunk_size=2)
    assert result.interrupted and result.steps_done == 3
    assert result.loss.shape == (len(result.steps), 4)  # chunks 0:2 and 2:4, common steps


def test_slicing_a_model_whose_replicas_share_inputs_in_groups_is_refused():
    model = ReplicaCNN(4, 1, 2, (8, 8), 3, input_groups=2)
    with pytest.raises(ValueError, match="input_groups"):
        slice_replicas(model, 0, 2)


@pytest.mark.parametrize("weight_decay", [-0.1, float("nan"), float("inf")])
def test_train_refuses_a_bad_weight_decay(weight_decay):
    with pytest.raises(ValueError, match="weight_decay"):
        train(
            LinearStudent(1, 3),
            lambda m, b: m.weight.sum(dim=(1, 2)),
            1,
            0.1,
            weight_decay=weight_decay,
        )
