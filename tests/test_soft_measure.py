"""The differentiable measurers: the numpy residual, read from torch images, with gradients."""

import numpy as np
import pytest
import torch

from rulekit.errors import RulekitError
from rulekit.registry import get_registry
from rulekit.tasks import Task
from rulekit.tasks.bars import Bars

from conftest import BUILTIN_TASKS, all_tasks, rng

# float32 cumulative sums against numpy's float64 ones; observed at most 5e-6 up to 64 pixels.
AGREEMENT = 1e-4


@pytest.fixture(params=BUILTIN_TASKS)
def task(request):
    return get_registry().task(request.param)


def rendered(task, size, fraction, n=300, seed=0):
    """Rendered images of ``n`` rows moved off the rule by ``fraction`` of the task's largest δ."""
    generator = rng(seed)
    features = task.violate(task.sample(generator, n), fraction * task.max_violation, generator)
    return task.render(features, size)


def gradient_of_squared_residual(task, images: torch.Tensor):
    images = images.clone().requires_grad_(True)
    residual = task.soft_residual(images)
    (gradient,) = torch.autograd.grad(residual.square().sum(), images)
    return residual.detach(), gradient


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_soft_residual_agrees_with_the_numpy_measurer(task, size, fraction):
    images = rendered(task, size, fraction, seed=size)
    expected = task.residual(task.measure(images))
    soft = task.soft_residual(torch.from_numpy(images))
    assert soft.dtype == torch.float32 and soft.shape == (len(images),)
    np.testing.assert_allclose(soft.numpy(), expected, atol=AGREEMENT, rtol=0)


def test_soft_residual_agrees_on_stored_uint8_levels(task):
    stored = np.round(rendered(task, 32, 0.5) * 255).astype(np.uint8)
    expected = task.residual(task.measure(stored))
    soft = task.soft_residual(torch.from_numpy(stored.astype(np.float32) / 255))
    np.testing.assert_allclose(soft.numpy(), expected, atol=AGREEMENT, rtol=0)


def test_gradients_are_finite_on_renders_blanks_white_and_noise(task):
    generator = torch.Generator().manual_seed(0)
    cases = {
        "rendered": torch.from_numpy(rendered(task, 16, 0.5, n=32)),
        "blank": torch.zeros(4, 16, 16),
        "white": torch.ones(4, 16, 16),
        "noise": torch.rand(32, 16, 16, generator=generator),
        "faint noise": 0.05 * torch.rand(32, 16, 16, generator=generator),
    }
    for case, images in cases.items():
        residual, gradient = gradient_of_squared_residual(task, images)
        assert torch.isfinite(residual).all(), case
        assert torch.isfinite(gradient).all(), case
    _, gradient = gradient_of_squared_residual(task, cases["rendered"])
    assert (gradient.abs().sum(dim=(1, 2)) > 0).all()


@pytest.mark.parametrize("size", [16, 32])
def test_descending_the_gradient_moves_images_toward_the_rule(task, size):
    images = torch.from_numpy(rendered(task, size, 0.5, n=64, seed=1))
    start, _ = gradient_of_squared_residual(task, images)
    for _ in range(5):
        _, gradient = gradient_of_squared_residual(task, images)
        # Each image's largest pixel change is 0.01: a small step, so the linearisation holds.
        step = gradient / gradient.abs().amax(dim=(1, 2), keepdim=True)
        images = (images - 0.01 * step).clamp(0.0, 1.0)
    end, _ = gradient_of_squared_residual(task, images)
    assert (end.abs() < start.abs()).all()
    assert end.abs().mean() < 0.95 * start.abs().mean()


def test_gradient_can_add_ink_where_there_is_none():
    bars = get_registry().task("bars")
    # The right bar is 0.1 too short: only raising blank pixels above it lengthens it.
    images = torch.from_numpy(bars.render(np.array([[0.4, 0.3]]), 16))
    _, gradient = gradient_of_squared_residual(bars, images)
    blank_right_half = (images == 0) & (torch.arange(16) >= 8)
    assert (gradient[blank_right_half] < 0).all()


def test_residual_keeps_the_backend_of_its_features(task):
    features = task.violate(task.sample(rng(), 8), task.max_violation / 2, rng(1))
    from_numpy = task.residual(features)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float64
    tensor = torch.from_numpy(features).requires_grad_(True)
    from_torch = task.residual(tensor)
    assert isinstance(from_torch, torch.Tensor) and from_torch.requires_grad
    np.testing.assert_allclose(from_torch.detach().numpy(), from_numpy, atol=1e-12)
    (gradient,) = torch.autograd.grad(from_torch.sum(), tensor)
    assert torch.isfinite(gradient).all() and (gradient.abs().sum(dim=1) > 0).all()


def test_precision_follows_the_images_and_half_precision_is_measured_in_float32(task):
    images = torch.from_numpy(rendered(task, 16, 0.5, n=16))
    assert task.soft_residual(images.double()).dtype == torch.float64
    assert task.soft_residual(images.half()).dtype == torch.float32


def test_an_empty_batch_gives_an_empty_residual(task):
    assert task.soft_residual(torch.zeros(0, 16, 16)).shape == (0,)


class WithoutSoftRead(Bars):
    """A task that measures only with numpy, as a third-party task may."""

    name = "numpy-only"
    soft_read = Task.soft_read


def test_a_task_without_soft_read_says_so_in_one_line():
    task = WithoutSoftRead()
    assert not task.has_soft_measurer
    with pytest.raises(RulekitError, match=r"^task 'numpy-only' has no differentiable measurer \(soft_read\)") as error:
        task.soft_residual(torch.zeros(2, 16, 16))
    assert "\n" not in str(error.value)


def test_every_installed_task_has_a_soft_measurer_or_refuses_cleanly():
    for task in all_tasks():
        images = torch.from_numpy(task.render(task.sample(rng(), 4), 32))
        if task.has_soft_measurer:
            assert torch.isfinite(task.soft_residual(images)).all()
        else:
            with pytest.raises(RulekitError, match="has no differentiable measurer"):
                task.soft_residual(images)
    assert all(get_registry().task(name).has_soft_measurer for name in BUILTIN_TASKS)


def test_soft_residual_refuses_what_it_cannot_measure():
    bars = get_registry().task("bars")
    with pytest.raises(RulekitError, match=r"torch tensor of shape \(n, size, size\)"):
        bars.soft_residual(np.zeros((2, 16, 16), dtype=np.float32))
    with pytest.raises(RulekitError, match=r"torch tensor of shape \(n, size, size\)"):
        bars.soft_residual(torch.zeros(2, 16, 12))
    with pytest.raises(RulekitError, match="floating-point"):
        bars.soft_residual(torch.zeros(2, 16, 16, dtype=torch.uint8))
    with pytest.raises(RulekitError, match="accepted: 8 to 1024"):
        bars.soft_residual(torch.zeros(2, 4, 4))
