"""Exact anti-aliased boxes and the estimators that read them back."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulekit.tasks import geometry


def test_interval_coverage_is_exact_area():
    coverage = geometry.interval_coverage(np.array([0.15]), np.array([0.35]), 10)
    np.testing.assert_allclose(coverage[0], [0, 0.5, 1, 0.5, 0, 0, 0, 0, 0, 0], atol=1e-6)


def test_box_rows_run_top_down_with_y_up():
    image = geometry.boxes(np.array([0.0]), np.array([0.5]), np.array([0.0]), np.array([0.25]), 4)[0]
    expected = np.zeros((4, 4))
    expected[3, :2] = 1.0
    np.testing.assert_array_equal(image, expected)


def test_pixel_boundary_rounds_to_nearest():
    assert geometry.pixel_boundary(0.5, 17) == 9
    assert geometry.pixel_boundary(0.45, 16) == 7
    assert geometry.pixel_boundary(1.2, 16) == 16


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(8, 96),
    low=st.floats(0.02, 0.6),
    extent=st.floats(0.15, 0.35),
)
def test_low_edge_of_a_box_is_recovered_exactly(size, low, extent):
    if extent * size <= 1.05:
        return
    coverage = geometry.interval_coverage(np.array([low]), np.array([low + extent]), size)
    edge = geometry.low_edge_px(coverage, np.array([extent * size]), 0)
    assert edge[0] == pytest.approx(low * size, abs=1e-4)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(12, 80), x=st.floats(0.2, 0.8), y=st.floats(0.2, 0.8), side=st.floats(0.1, 0.3))
def test_square_centre_and_side_are_recovered(size, x, y, side):
    if side * size <= 1.05:
        return
    image = geometry.boxes(np.array([x - side / 2]), np.array([x + side / 2]), np.array([y - side / 2]), np.array([y + side / 2]), size)
    centre_x, centre_y, measured_side = geometry.square(geometry.upright(image), 0, 0)
    assert centre_x[0] / size == pytest.approx(x, abs=1e-5)
    assert centre_y[0] / size == pytest.approx(y, abs=1e-5)
    assert measured_side[0] / size == pytest.approx(side, abs=1e-5)


def test_square_of_an_empty_region_is_nan():
    centre_x, centre_y, side = geometry.square(np.zeros((1, 8, 8), dtype=np.float32), 0, 0)
    assert np.isnan(centre_x[0]) and np.isnan(centre_y[0]) and side[0] == 0
