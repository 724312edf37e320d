"""The ``generate`` stage: draw a task's training data and write ``data/<task>/``."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from rulekit import __version__
from rulekit.dataset import ImageSet, to_uint8, write_image_set
from rulekit.params import Params
from rulekit.progress import progress_bar
from rulekit.registry import get_registry
from rulekit.tasks import Task

CHUNK = 8192


def task_rng(seed: int, task_name: str) -> np.random.Generator:
    """The generator for one task: the same seed gives each task its own stream, stably."""
    return np.random.default_rng([seed, zlib.crc32(task_name.encode())])


def noise_floor(task: Task, images: np.ndarray, features: np.ndarray) -> dict[str, float]:
    """How far measuring the stored images lands from the true features and from the rule."""
    measured = task.measure(images)
    residual = task.residual(measured)
    return {
        "max_feature_error": float(np.max(np.abs(measured - features))),
        "residual_std": float(np.std(residual)),
        "residual_abs_max": float(np.max(np.abs(residual))),
        "coarse_accuracy": float(np.mean(task.coarse_ok(measured))),
    }


def generate(task_name: str, params: Params, out_dir: str | Path) -> dict:
    """Render ``params.generate.n_images`` images of a task into ``out_dir``; return the metadata.

    ``out_dir`` is replaced only once everything in it has been written.
    """
    task = get_registry().task(task_name)
    settings = params.generate
    size = task.check_size(settings.size)
    features = task.sample(task_rng(settings.seed, task_name), settings.n_images)
    images = np.empty((settings.n_images, size, size), dtype=np.uint8)
    with progress_bar(f"generate {task_name}", settings.n_images) as progress:
        for start in range(0, settings.n_images, CHUNK):
            stop = min(start + CHUNK, settings.n_images)
            images[start:stop] = to_uint8(task.render(features[start:stop], size))
            progress.advance(0, stop - start)
    meta = {
        "task": task_name,
        "description": task.description,
        "feature_names": list(task.feature_names),
        "size": size,
        "n_images": settings.n_images,
        "seed": settings.seed,
        "params": settings.model_dump(),
        "rule_constants": task.constants(),
        "rulekit_version": __version__,
        "noise_floor": noise_floor(task, images, features),
    }
    write_image_set(out_dir, ImageSet(images, features, meta), settings.grid_images)
    return meta
