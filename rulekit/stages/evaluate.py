"""The ``evaluate`` stage: every metric, with bootstrap intervals, for one task, model and guidance.

Reads the samples and the training data, writes ``metrics/TASK/MODEL/GUIDANCE.json`` (small,
committed, compared across commits with ``dvc metrics diff``) and the plot data and figure that
show the samples against the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rulekit.dataset import read_dataset, read_image_set
from rulekit.figures import histogram_bins, save_rule_figure
from rulekit.metrics.base import MetricInput
from rulekit.metrics.bootstrap import evaluate_all
from rulekit.params import Params
from rulekit.registry import get_registry
from rulekit.storage import write_bytes_atomic, write_json_atomic

#: Training images drawn into the scatter: enough to show the band, few enough to see samples.
SCATTER_DATA_POINTS = 1000


@dataclass(frozen=True)
class EvaluationPaths:
    """Where one evaluation reads and writes."""

    data: Path
    samples: Path
    metrics: Path
    histogram: Path
    scatter: Path
    figure: Path


def default_paths(task: str, model: str, guidance: str, root: Path = Path(".")) -> EvaluationPaths:
    run = f"{task}-{model}-{guidance}"
    return EvaluationPaths(
        data=root / "data" / task,
        samples=root / "samples" / task / model / guidance,
        metrics=root / "metrics" / task / model / f"{guidance}.json",
        histogram=root / "plots" / "residuals" / f"{run}.csv",
        scatter=root / "plots" / "scatter" / f"{run}.csv",
        figure=root / "plots" / "figures" / f"{run}.png",
    )


def _csv(header: list[str], rows) -> bytes:
    lines = [",".join(header)] + [",".join(f"{value:.6g}" if isinstance(value, float) else str(value) for value in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def evaluate(task_name: str, model_name: str, guidance_name: str, params: Params, paths: EvaluationPaths | None = None) -> dict:
    """Compute every registered metric on one set of samples; write metrics, plot data and figure."""
    registry = get_registry()
    task = registry.task(task_name)
    registry.get("model", model_name)
    registry.get("guidance", guidance_name)
    paths = paths or default_paths(task_name, model_name, guidance_name)
    settings = params.evaluate
    samples = read_image_set(paths.samples, extras=("valid",))
    data = read_dataset(paths.data)
    valid = samples.extras["valid"].astype(bool)
    reference_features = task.measure(data.images)
    metric_input = MetricInput(task, samples.images, samples.features, valid, data.images, reference_features)
    metrics = [registry.get("metric", name) for name in registry.names("metric")]
    estimates = evaluate_all(metrics, metric_input, settings.n_resamples, settings.confidence, settings.seed)
    result = {
        "task": task_name,
        "model": model_name,
        "guidance": guidance_name,
        "n_samples": int(len(samples.images)),
        "confidence": settings.confidence,
        "sampling_seconds": samples.meta.get("seconds"),
        "metrics": {name: estimate.as_dict() for name, estimate in sorted(estimates.items())},
    }
    write_json_atomic(paths.metrics, result)

    sample_residual = task.residual(samples.features[valid])
    data_residual = task.residual(reference_features)
    edges = histogram_bins([sample_residual, data_residual])
    centres = (edges[:-1] + edges[1:]) / 2
    fractions = [np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0] / max(len(values), 1) for values in (data_residual, sample_residual)]
    write_bytes_atomic(paths.histogram, _csv(["residual", "data", "samples"], zip(centres, *fractions)))

    shown = np.random.default_rng(settings.seed).permutation(len(reference_features))[:SCATTER_DATA_POINTS]
    driver = task.feature_names[0]
    rows = [(float(x), float(r), "data") for x, r in zip(reference_features[shown, 0], data_residual[shown])]
    rows += [(float(x), float(r), "samples") for x, r in zip(samples.features[valid, 0], sample_residual)]
    write_bytes_atomic(paths.scatter, _csv(["feature", "residual", "source"], rows))
    save_rule_figure(
        paths.figure,
        f"{task_name}: {model_name}, guidance {guidance_name}",
        driver,
        (reference_features[shown, 0], data_residual[shown]),
        (samples.features[valid, 0], sample_residual),
        edges,
    )
    return result
