"""The ``sample`` stage: draw images from a trained model, measure them, write ``samples/...``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rulekit.dataset import ImageSet, to_uint8, write_image_set
from rulekit.errors import DataFileError
from rulekit.guidance.base import GuidanceContext, GuidedRun
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


@dataclass(frozen=True)
class Draw:
    """How many samples to draw, in what batches, from what seed, and how many to show."""

    seed: int
    n_samples: int
    batch_size: int
    grid_images: int

    @classmethod
    def for_sample_stage(cls, params: Params) -> "Draw":
        """The ``sample`` stage's unguided draw: the model's own samples, the classifier's negatives."""
        settings = params.sample
        return cls(settings.seed, settings.n_samples, settings.batch_size, settings.grid_images)

    @classmethod
    def for_evaluation(cls, params: Params) -> "Draw":
        """The ``evaluate`` stage's draw: the same seed for every strategy, apart from the classifier's."""
        settings = params.evaluate
        return cls(settings.sampling_seed, settings.n_samples, settings.batch_size, settings.grid_images)


def prepare_guidance(task, guidance_name: str, params: Params, process, size: int, classifier_dir: Path) -> GuidedRun:
    """The configured run of a strategy; stops before any sampling if it cannot run."""
    guidance = get_registry().get("guidance", guidance_name)
    context = GuidanceContext(task=task, process=process, size=size, classifier_dir=classifier_dir)
    return guidance.prepare(params.guidance_settings_for(guidance_name), context)


def sample(
    task_name: str,
    model_name: str,
    guidance_name: str,
    params: Params,
    model_dir: Path | None = None,
    out_dir: Path | None = None,
    classifier_dir: Path | None = None,
    draw: Draw | None = None,
) -> dict:
    """Sample with a guidance strategy, measure the samples and write them (default: the
    ``sample`` stage's draw into ``samples/TASK/MODEL/GUIDANCE``)."""
    registry = get_registry()
    task = registry.task(task_name)
    registry.get("guidance", guidance_name)
    model_dir = model_dir or Path("models") / task_name / model_name
    out_dir = out_dir or Path("samples") / task_name / model_name / guidance_name
    classifier_dir = classifier_dir or Path("classifiers") / task_name / model_name
    draw = draw or Draw.for_sample_stage(params)
    info, process, network = load_trained(model_dir, params)
    run = prepare_guidance(task, guidance_name, params, process, info["size"], classifier_dir)
    images, seconds = sample_images(
        process,
        network,
        run,
        draw.n_samples,
        info["size"],
        draw.batch_size,
        draw.seed,
        label=f"sample {task_name} {model_name} {guidance_name}",
        guidance_name=guidance_name,
    )
    stored = to_uint8(images)
    features = task.measure(stored)
    valid = task.valid(stored, features)
    meta = {
        "task": task_name,
        "model": info["model"],
        "guidance": guidance_name,
        "guidance_settings": params.guidance_settings_for(guidance_name).model_dump(),
        "n_samples": draw.n_samples,
        "n_drawn": draw.n_samples * run.oversample,
        "size": info["size"],
        "seed": draw.seed,
        "sampler_settings": params.sampler_settings_for(info["model"]).model_dump(),
        "sampling_steps": len(process.sampling_times()),
        "seconds": seconds,
        "images_per_second": draw.n_samples * run.oversample / seconds,
        "feature_names": list(task.feature_names),
        "summary": summarize(task, features, valid),
    }
    extras = {"valid": valid.astype(np.uint8)}
    write_image_set(out_dir, ImageSet(stored, features, meta, extras), draw.grid_images)
    return meta
