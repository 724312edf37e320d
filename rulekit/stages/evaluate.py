"""The ``evaluate`` stage: guided sampling and every metric, for one task, model and guidance.

Draws ``evaluate.n_samples`` samples with the strategy into ``evaluation/TASK/MODEL/GUIDANCE``,
from the same seed for every strategy (and a different one from the ``sample`` stage's draw, whose
rejected samples taught the rule classifier: no strategy is judged on the classifier's own
training images). Then reads them and the training data, writes ``metrics/TASK/MODEL/guidance/GUIDANCE.json``
(small, committed, compared across commits with ``dvc metrics diff``) and the plot data and figure
that show the samples against the rule.
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
from rulekit.stages.sample import Draw, sample
from rulekit.storage import write_bytes_atomic, write_json_atomic

#: Training images drawn into the scatter: enough to show the band, few enough to see samples.
SCATTER_DATA_POINTS = 1000


@dataclass(frozen=True)
class EvaluationPaths:
    """Where one evaluation reads and writes."""

    data: Path
    model: Path
    classifier: Path
    samples: Path
    metrics: Path
    histogram: Path
    scatter: Path
    figure: Path


def default_paths(task: str, model: str, guidance: str, root: Path = Path(".")) -> EvaluationPaths:
    run = f"{task}-{model}-{guidance}"
    return EvaluationPaths(
        data=root / "data" / task,
        model=root / "models" / task / model,
        classifier=root / "classifiers" / task / model,
        samples=root / "evaluation" / task / model / guidance,
        metrics=root / "metrics" / task / model / "guidance" / f"{guidance}.json",
        histogram=root / "plots" / "residuals" / f"{run}.csv",
        scatter=root / "plots" / "scatter" / f"{run}.csv",
        figure=root / "plots" / "figures" / f"{run}.png",
    )


def _csv(header: list[str], rows) -> bytes:
    lines = [",".join(header)] + [",".join(f"{value:.6g}" if isinstance(value, float) else str(value) for value in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def evaluate(
    task_name: str,
    model_name: str,
    guidance_name: str,
    params: Params,
    paths: EvaluationPaths | None = None,
    draw_samples: bool = True,
) -> dict:
    """Sample with the strategy (unless ``draw_samples`` is False: then read the samples already
    in ``paths.samples``), compute every registered metric; write metrics, plot data and figure."""
    registry = get_registry()
    task = registry.task(task_name)
    registry.get("model", model_name)
    registry.get("guidance", guidance_name)
    paths = paths or default_paths(task_name, model_name, guidance_name)
    settings = params.evaluate
    # Read before drawing: a damaged data file must stop the stage before it replaces any output.
    data = read_dataset(paths.data)
    if draw_samples:
        sample(
            task_name,
            model_name,
            guidance_name,
            params,
            model_dir=paths.model,
            out_dir=paths.samples,
            classifier_dir=paths.classifier,
            draw=Draw.for_evaluation(params),
        )
    samples = read_image_set(paths.samples, extras=("valid",))
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
        "guidance_settings": samples.meta.get("guidance_settings", {}),
        "metrics": {name: estimate.as_dict() for name, estimate in sorted(estimates.items())},
    }
    # Timings stay beside the samples (their meta.json), not here: the same params must give
    # byte-identical metrics, and a clock never does.
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
    return {**result, "sampling_seconds": samples.meta.get("seconds")}
