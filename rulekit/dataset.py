"""A task's training data on disk: ``data/<task>/`` with images, true features and how they were made.

``data.safetensors`` holds ``images`` (uint8, n × size × size, row 0 at the top) and ``features``
(float64, n × k, fractions of the image side); ``meta.json`` records the task, params, seed, rule
constants, rulekit version and the measured noise floor; ``grid.png`` shows the first images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rulekit.errors import DataFileError
from rulekit.storage import load_arrays, load_json

ARRAYS_FILE = "data.safetensors"
META_FILE = "meta.json"
GRID_FILE = "grid.png"


@dataclass(frozen=True)
class Dataset:
    """Images, their true features, and the metadata written beside them."""

    images: np.ndarray
    features: np.ndarray
    meta: dict

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantise images with values in [0, 1] to uint8, rounding to nearest."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def read_dataset(folder: str | Path) -> Dataset:
    """Load ``data/<task>/``; missing, corrupt or inconsistent files stop with the file's name."""
    folder = Path(folder)
    meta = load_json(folder / META_FILE)
    arrays = load_arrays(folder / ARRAYS_FILE, required=("images", "features"))
    images, features = arrays["images"], arrays["features"]
    path = folder / ARRAYS_FILE
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataFileError(f"{path}: images must be uint8 of shape (n, size, size), got {images.dtype} {images.shape}")
    if features.ndim != 2 or len(features) != len(images):
        raise DataFileError(f"{path}: features must have one row per image, got {features.shape} for {len(images)} images")
    return Dataset(images=images, features=features.astype(np.float64, copy=False), meta=meta)
