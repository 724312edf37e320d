"""Exact anti-aliased boxes, and the estimators that read them back from pixels.

Coordinates are fractions of the image side: x grows to the right and y grows upward, so a feature
reads the same at every resolution. A pixel's value is the exact fraction of its area that a shape
covers, which makes every estimator below exact on rendered data (up to floating point) rather than
accurate to a pixel: masses are areas, and the running sum of a box's profile is a ramp whose
offset is the box's edge.
"""

from __future__ import annotations

import numpy as np


def interval_coverage(low: np.ndarray, high: np.ndarray, size: int) -> np.ndarray:
    """Fraction of each of ``size`` unit pixels covered by ``[low, high]`` (fractions of the side).

    ``low`` and ``high`` have shape (n,); the result has shape (n, size), pixel 0 at coordinate 0.
    """
    edges = np.arange(size, dtype=np.float32)
    low_px = (np.asarray(low, dtype=np.float32) * size)[:, None]
    high_px = (np.asarray(high, dtype=np.float32) * size)[:, None]
    return np.clip(np.minimum(high_px, edges + 1) - np.maximum(low_px, edges), 0.0, 1.0)


def boxes(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, size: int) -> np.ndarray:
    """Images (n, size, size) of one axis-aligned box each, row 0 at the top of the image."""
    across = interval_coverage(x0, x1, size)
    up = interval_coverage(y0, y1, size)[:, ::-1]
    return up[:, :, None] * across[:, None, :]


def fixed_box(x0: float, x1: float, y0: float, y1: float, size: int) -> np.ndarray:
    """One image (size, size) of a box that is the same in every sample (a pole, a horizon)."""
    return boxes(np.array([x0]), np.array([x1]), np.array([y0]), np.array([y1]), size)[0]


def pixel_boundary(position: float, size: int) -> int:
    """The pixel boundary nearest to ``position`` (a fraction of the side), as a pixel index."""
    return int(np.clip(np.floor(position * size + 0.5), 0, size))


def upright(images: np.ndarray) -> np.ndarray:
    """A view of images (n, rows, cols) indexed [n, y, x] with y growing upward."""
    return images[:, ::-1, :]


def region(images_up: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float]):
    """The part of upright images between two pixel boundaries in x and y, with its pixel offsets.

    Returns ``(pixels, x_offset, y_offset)``; layouts keep every shape at least one pixel away
    from the boundaries they measure within, so no shape is cut. Works on torch tensors too.
    """
    size = images_up.shape[-1]
    x_lo, x_hi = (pixel_boundary(value, size) for value in x_range)
    y_lo, y_hi = (pixel_boundary(value, size) for value in y_range)
    return images_up[:, y_lo:y_hi, x_lo:x_hi], x_lo, y_lo


def area_px(pixels: np.ndarray) -> np.ndarray:
    """Covered area of each image region, in square pixels."""
    return pixels.sum(axis=(1, 2), dtype=np.float64)


def low_edge_px(profile: np.ndarray, extent_px: np.ndarray, offset: int) -> np.ndarray:
    """Low edge, in pixels, of one interval of length ``extent_px`` given its coverage profile.

    The running sum of a covered interval ``[a, b]`` at an integer boundary ``k`` inside it is
    exactly ``k - a``. The boundary whose running sum is nearest half the extent is the one
    farthest from both edges, so it is read there; ``extent_px`` must exceed one pixel.
    """
    n, length = profile.shape
    running = np.zeros((n, length + 1), dtype=np.float64)
    np.cumsum(profile, axis=1, dtype=np.float64, out=running[:, 1:])
    extent = np.asarray(extent_px, dtype=np.float64)[:, None]
    inner = np.argmin(np.abs(running - extent / 2), axis=1)
    return offset + inner - running[np.arange(n), inner]


def square(pixels: np.ndarray, x_offset: int, y_offset: int):
    """Centre x, centre y and side (all in pixels) of the one square in each upright region."""
    with np.errstate(divide="ignore", invalid="ignore"):
        side = np.sqrt(area_px(pixels))
        across = pixels.sum(axis=1, dtype=np.float64) / side[:, None]
        up = pixels.sum(axis=2, dtype=np.float64) / side[:, None]
    centre_x = low_edge_px(across, side, x_offset) + side / 2
    centre_y = low_edge_px(up, side, y_offset) + side / 2
    return centre_x, centre_y, side
