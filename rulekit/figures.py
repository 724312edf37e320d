"""Pictures a person would rather look at than read: grids of sample images."""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image

from rulekit.storage import write_bytes_atomic


def grid_image(images: np.ndarray, columns: int = 8, gap: int = 1, min_width: int = 512) -> np.ndarray:
    """Tile images (n, h, w) with values in [0, 1] or uint8 into one uint8 picture.

    Tiles sit on a mid-grey background so that black and white borders of the images stay
    visible; the picture is scaled up by an integer factor to at least ``min_width`` pixels.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    count, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap), 128, dtype=np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        canvas[top : top + height, left : left + width] = images[index]
    scale = max(1, math.ceil(min_width / canvas.shape[1]))
    return np.kron(canvas, np.ones((scale, scale), dtype=np.uint8))


def save_grid(images: np.ndarray, path: str | os.PathLike, columns: int = 8) -> None:
    """Write a PNG grid of ``images`` to ``path``, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(grid_image(images, columns)).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
