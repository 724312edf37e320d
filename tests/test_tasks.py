"""The four built-in tasks: seeded, exact to render and measure, and honest about their rules."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulekit.errors import RulekitError
from rulekit.registry import get_registry

from conftest import BUILTIN_TASKS, rng

TOLERANCE = 0.002  # of the image side: the measurer's promise
N = 1000


@pytest.fixture(params=BUILTIN_TASKS)
def task(request):
    return get_registry().task(request.param)


def test_same_seed_gives_identical_bytes(task):
    first = task.render(task.sample(rng(7), 64), 32)
    second = task.render(task.sample(rng(7), 64), 32)
    other = task.render(task.sample(rng(8), 64), 32)
    assert first.tobytes() == second.tobytes()
    assert first.tobytes() != other.tobytes()


def test_images_are_in_unit_range_and_float32(task):
    images = task.render(task.sample(rng(), 200), 32)
    assert images.dtype == np.float32 and images.shape == (200, 32, 32)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Anti-aliased: edges produce values strictly between 0 and 1.
    assert np.any((images > 0.01) & (images < 0.99))


@pytest.mark.parametrize("size", [16, 17, 32, 45, 64])
def test_measurer_recovers_every_feature_within_tolerance(task, size):
    features = task.sample(rng(size), N)
    images = task.render(features, size)
    error = np.abs(task.measure(images) - features)
    assert error.max() < TOLERANCE
    stored = np.round(images * 255).astype(np.uint8)
    assert np.abs(task.measure(stored) - features).max() < TOLERANCE


def test_measurer_works_at_the_smallest_supported_size(task):
    features = task.sample(rng(), N)
    measured = task.measure(task.render(features, task.min_size))
    assert np.abs(measured - features).max() < TOLERANCE


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(BUILTIN_TASKS), size=st.integers(16, 96), seed=st.integers(0, 2**32 - 1))
def test_measurer_is_exact_at_any_supported_size(name, size, seed):
    task = get_registry().task(name)
    features = task.sample(rng(seed), 50)
    assert np.abs(task.measure(task.render(features, size)) - features).max() < TOLERANCE


def test_sizes_outside_the_supported_range_are_refused(task):
    with pytest.raises(RulekitError, match=f"accepted: {task.min_size} to {task.max_size}"):
        task.render(task.sample(rng(), 2), task.min_size - 1)
    with pytest.raises(RulekitError, match="must be an integer"):
        task.render(task.sample(rng(), 2), 32.0)


def test_residual_is_zero_on_data_and_coarse_rule_holds(task):
    features = task.sample(rng(), N)
    assert np.abs(task.residual(features)).max() < 1e-12
    assert task.coarse_ok(features).all()
    measured = task.measure(task.render(features, 32))
    assert np.abs(task.residual(measured)).max() < TOLERANCE
    assert task.coarse_ok(measured).all()


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_violation_moves_the_residual_by_exactly_delta(task, fraction):
    delta = fraction * task.max_violation
    features = task.sample(rng(), N)
    violated = task.violate(features, delta, rng(1))
    np.testing.assert_allclose(np.abs(task.residual(violated)), delta, atol=1e-12)
    assert task.in_frame(violated).all()
    measured = task.measure(task.render(violated, 32))
    np.testing.assert_allclose(np.abs(task.residual(measured)), delta, atol=TOLERANCE)
    # Both signs of violation occur.
    signs = np.sign(task.residual(violated))
    assert (signs > 0).any() and (signs < 0).any()


def test_violation_outside_the_supported_range_is_refused(task):
    with pytest.raises(RulekitError, match="outside what task"):
        task.violate(task.sample(rng(), 4), task.max_violation * 1.5, rng())


def test_coarse_violations_fail_the_coarse_rule_even_when_measured(task):
    features = task.violate_coarse(rng(), N)
    assert task.in_frame(features).all()
    assert not task.coarse_ok(features).any()
    measured = task.measure(task.render(features, 16))
    assert not task.coarse_ok(measured).any()


def test_validity_accepts_renders_and_rejects_noise_and_blanks(task):
    images = task.render(task.sample(rng(), 200), 32)
    assert task.valid(images).all()
    assert task.valid(np.round(images * 255).astype(np.uint8)).all()
    noise = rng(3).random((200, 32, 32)).astype(np.float32)
    assert not task.valid(noise).any()
    assert not task.valid(np.zeros((5, 32, 32), dtype=np.float32)).any()


def test_features_must_match_the_task():
    task = get_registry().task("bars")
    with pytest.raises(RulekitError, match=r"shape \(n, 2\)"):
        task.render(np.zeros((3, 5)), 16)
    with pytest.raises(RulekitError, match=r"shape \(n, size, size\)"):
        task.measure(np.zeros((3, 16, 12)))


def test_rules_at_known_points():
    registry = get_registry()
    bars = registry.task("bars")
    np.testing.assert_allclose(bars.residual(np.array([[0.4, 0.4], [0.6, 0.45]])), [0.0, -0.05], atol=1e-12)
    shadow = registry.task("shadow")
    # Sun 0.2 left of the pole and 0.3 above its top: the shadow is 0.2 · 0.2 / 0.3 to the right.
    expected_length = 0.2 * 0.2 / 0.3
    np.testing.assert_allclose(shadow.residual(np.array([[0.3, 0.75, expected_length]])), [0.0], atol=1e-12)
    assert shadow.coarse_ok(np.array([[0.3, 0.75, expected_length], [0.3, 0.75, -expected_length]])).tolist() == [True, False]
    mirror = registry.task("mirror")
    np.testing.assert_allclose(mirror.residual(np.array([[0.2, 0.5, 0.1, 0.8, 0.53, 0.09]])), [0.03], atol=1e-12)
    perspective = registry.task("perspective")
    np.testing.assert_allclose(perspective.rule(np.array([0.25])), [0.04 + 0.35 * 0.6], atol=1e-12)
    np.testing.assert_allclose(perspective.residual(np.array([[0.25, 0.25, 0.05, 0.3]])), [-0.02], atol=1e-12)


def test_bars_pixels_at_a_known_configuration():
    bars = get_registry().task("bars")
    image = bars.render(np.array([[0.4, 0.4]]), 10)[0]
    # Left bar spans columns 1.5 to 3.5 and rows from y = 0.1 to 0.5, i.e. rows 5 to 8 from the top.
    np.testing.assert_allclose(image[5:9, 1:5], [[0.5, 1, 0.5, 0]] * 4, atol=1e-6)
    assert image[:5].sum() == 0 and image[9].sum() == 0
    assert image.sum() == pytest.approx(2 * 0.2 * 0.4 * 100, abs=1e-4)
