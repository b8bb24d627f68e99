import pytest
import torch

from kdlib import config


def test_scale_from_argument_env_and_default(monkeypatch):
    monkeypatch.delenv("KDLIB_SCALE", raising=False)
    assert config.get_scale() == "quick"
    monkeypatch.setenv("KDLIB_SCALE", "FULL")
    assert config.get_scale() == "full"
    assert config.get_scale("quick") == "quick"


@pytest.mark.parametrize("bad", ["medium", "", "qiuck"])
def test_unknown_scale_names_allowed_values(bad):
    with pytest.raises(ValueError, match="quick"):
        config.get_scale(bad)


def test_scale_type_error():
    with pytest.raises(TypeError, match="scale"):
        config.get_scale(3)


def test_device_default_and_override(monkeypatch):
    monkeypatch.delenv("KDLIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.get_device().type == expected
    assert config.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("KDLIB_DEVICE", "cpu")
    assert config.get_device().type == "cpu"


@pytest.mark.parametrize("bad", ["gpu0", "tpu"])
def test_unknown_device_is_a_value_error(bad):
    with pytest.raises(ValueError, match="device"):
        config.get_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        config.get_device("cuda")


def test_a_cuda_device_turns_tf32_off(monkeypatch):
    """The GPU tolerance assumes float32 stays float32: PyTorch's default lets cuDNN convolutions
    use TF32, and choosing a CUDA device turns that off (matrix products too)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        assert config.get_device("cuda:0") == torch.device("cuda:0")
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:  # flags that are not plain attributes: restored by hand
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_resolve_and_pick():
    cfg = config.resolve("full", "cpu", seed=3)
    assert cfg.is_full and cfg.seed == 3 and cfg.pick(1, 2) == 2
    assert config.resolve("quick", "cpu").pick(1, 2) == 1
    with pytest.raises(TypeError, match="seed"):
        config.resolve(seed=1.5)


def test_seed_gives_identical_numbers():
    a = torch.randn(5, generator=config.seed_everything(7))
    b = torch.randn(5, generator=config.seed_everything(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.randn(5, generator=config.make_generator(8)))


def test_single_cpu_thread_restores_the_thread_count():
    from kdlib.config import resolve, single_cpu_thread

    seen = []
    run = single_cpu_thread(lambda config: seen.append(torch.get_num_threads()) or "done")
    before = torch.get_num_threads()
    assert run(resolve("quick", "cpu")) == "done"
    assert seen == [1] and torch.get_num_threads() == before


def test_single_cpu_thread_can_leave_the_full_scale_its_threads():
    from kdlib.config import resolve, single_cpu_thread

    seen = []
    run = single_cpu_thread(full_scale=False)(lambda config: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    run(resolve("quick", "cpu"))
    run(resolve("full", "cpu"))
    assert seen == [1, before] and torch.get_num_threads() == before
