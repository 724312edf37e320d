"""The ``sample`` stage: draw images from a trained model, measure them, write ``samples/...``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rulekit.dataset import ImageSet, to_uint8, write_image_set
from rulekit.errors import DataFileError
from rulekit.params import Params
from rulekit.registry import get_registry
from rulekit.sampling import sample_images
from rulekit.storage import load_json
from rulekit.training import MODEL_INFO_FILE


def load_trained(model_dir: Path, params: Params):
    """The family, configured process and network of a trained model folder."""
    info = load_json(model_dir / MODEL_INFO_FILE)
    registry = get_registry()
    try:
        family = registry.get("model", info["model"])
        train_settings = family.train_settings.model_validate(info["model_settings"])
    except (KeyError, ValueError) as error:
        raise DataFileError(f"{model_dir / MODEL_INFO_FILE} does not describe a trained model ({error})") from None
    process = family.process(train_settings, params.sampler_settings_for(info["model"]))
    network = family.load_network(model_dir)
    return info, process, network


def summarize(task, features: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Validity, and the coarse and fine rule among valid samples: the first look at a model."""
    kept = features[valid]
    return {
        "validity": float(valid.mean()),
        "coarse_accuracy": float(task.coarse_ok(kept).mean()) if len(kept) else float("nan"),
        "mean_abs_residual": float(np.abs(task.residual(kept)).mean()) if len(kept) else float("nan"),
    }


def sample(
    task_name: str,
    model_name: str,
    guidance_name: str,
    params: Params,
    model_dir: Path | None = None,
    out_dir: Path | None = None,
) -> dict:
    """Sample ``params.sample.n_samples`` images with a guidance strategy and write them, measured."""
    registry = get_registry()
    task = registry.task(task_name)
    guidance = registry.get("guidance", guidance_name)
    model_dir = model_dir or Path("models") / task_name / model_name
    out_dir = out_dir or Path("samples") / task_name / model_name / guidance_name
    info, process, network = load_trained(model_dir, params)
    settings = params.sample
    images, seconds = sample_images(
        process,
        network,
        guidance,
        settings.n_samples,
        info["size"],
        settings.batch_size,
        settings.seed,
        label=f"sample {task_name} {model_name} {guidance_name}",
    )
    stored = to_uint8(images)
    features = task.measure(stored)
    valid = task.valid(stored, features)
    meta = {
        "task": task_name,
        "model": info["model"],
        "guidance": guidance_name,
        "n_samples": settings.n_samples,
        "size": info["size"],
        "seed": settings.seed,
        "sampler_settings": params.sampler_settings_for(info["model"]).model_dump(),
        "sampling_steps": len(process.sampling_times()),
        "seconds": seconds,
        "images_per_second": settings.n_samples * guidance.oversample / seconds,
        "feature_names": list(task.feature_names),
        "summary": summarize(task, features, valid),
    }
    extras = {"valid": valid.astype(np.uint8)}
    write_image_set(out_dir, ImageSet(stored, features, meta, extras), settings.grid_images)
    return meta
