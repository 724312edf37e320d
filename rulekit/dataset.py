"""Image sets on disk: a task's training data (``data/<task>/``) and a model's samples.

A folder holds ``data.safetensors`` with ``images`` (uint8, n × size × size, row 0 at the top)
and ``features`` (float64, n × k, fractions of the image side), plus any named extras (samples
carry ``valid``), ``meta.json`` saying how the set was made, and ``grid.png`` showing the first
images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rulekit.errors import DataFileError
from rulekit.figures import save_grid
from rulekit.storage import load_arrays, load_json, replace_directory, save_arrays, write_json_atomic

ARRAYS_FILE = "data.safetensors"
META_FILE = "meta.json"
GRID_FILE = "grid.png"


@dataclass(frozen=True)
class ImageSet:
    """Images, their features, per-image extras, and the metadata written beside them."""

    images: np.ndarray
    features: np.ndarray
    meta: dict
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantise images with values in [0, 1] to uint8, rounding to nearest."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_model_range(images: np.ndarray):
    """Images (n, size, size), uint8 (taken as value / 255) or float in [0, 1], as a float32 torch
    tensor (n, 1, size, size) in [-1, 1]: the range and shape every model process works in."""
    import torch

    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(127.5).sub_(1.0).unsqueeze(1)
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1) * 2.0 - 1.0


def write_image_set(folder: str | Path, image_set: ImageSet, grid_images: int) -> None:
    """Write ``folder`` whole: it replaces an existing one only once every file is written."""
    arrays = {"images": image_set.images, "features": image_set.features, **image_set.extras}
    with replace_directory(folder) as staging:
        save_arrays(staging / ARRAYS_FILE, arrays)
        save_grid(image_set.images[:grid_images], staging / GRID_FILE)
        write_json_atomic(staging / META_FILE, image_set.meta)


def read_image_set(folder: str | Path, extras: tuple[str, ...] = ()) -> ImageSet:
    """Load an image set; missing, corrupt or inconsistent files stop with the file's name."""
    folder = Path(folder)
    meta = load_json(folder / META_FILE)
    path = folder / ARRAYS_FILE
    arrays = load_arrays(path, required=("images", "features", *extras))
    images, features = arrays["images"], arrays["features"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataFileError(f"{path}: images must be uint8 of shape (n, size, size), got {images.dtype} {images.shape}")
    for name, array in [("features", features), *((name, arrays[name]) for name in extras)]:
        if len(array) != len(images):
            raise DataFileError(f"{path}: {name} must have one row per image, got {array.shape} for {len(images)} images")
    if features.ndim != 2:
        raise DataFileError(f"{path}: features must be a 2-d array, got shape {features.shape}")
    return ImageSet(
        images=images,
        features=features.astype(np.float64, copy=False),
        meta=meta,
        extras={name: arrays[name] for name in extras},
    )


def read_dataset(folder: str | Path) -> ImageSet:
    """Load a task's training data, ``data/<task>/``."""
    return read_image_set(folder)
