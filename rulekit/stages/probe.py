"""The ``probe`` stage: how detectable is a fine-rule violation of size δ, to a scikit-learn probe?

For one task and one trained model, fits each probe estimator on each probe input (raw pixels,
pixels noised to each level, the model's own mid-block activations, ...) to tell rule-abiding
images from images that break the fine rule by δ, and writes the held-out ROC AUC against δ and
noise level: ``plots/probes/TASK-MODEL.csv``, a figure, and a small summary in ``metrics/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rulekit.dataset import read_dataset
from rulekit.figures import save_probe_figure
from rulekit.params import Params
from rulekit.probes.base import ProbeContext
from rulekit.probes.run import probe_task, write_rows_csv
from rulekit.registry import get_registry
from rulekit.stages.sample import load_trained
from rulekit.storage import write_json_atomic


@dataclass(frozen=True)
class ProbePaths:
    """Where one probe run reads and writes."""

    data: Path
    model: Path
    classifier: Path
    table: Path
    figure: Path
    summary: Path


def default_paths(task: str, model: str, root: Path = Path(".")) -> ProbePaths:
    return ProbePaths(
        data=root / "data" / task,
        model=root / "models" / task / model,
        classifier=root / "classifiers" / task / model,
        table=root / "plots" / "probes" / f"{task}-{model}.csv",
        figure=root / "plots" / "figures" / f"probe-{task}-{model}.png",
        summary=root / "metrics" / task / model / "probes.json",
    )


def summarize(rows: list[dict]) -> dict:
    """The best held-out AUC per input and δ over estimators and levels: how visible each δ is."""
    best: dict[str, dict[str, float]] = {}
    for row in rows:
        by_delta = best.setdefault(row["input"], {})
        key = f"delta_{row['delta']:g}"
        by_delta[key] = max(by_delta.get(key, 0.0), float(row["auc"]))
    return best


def probe(task_name: str, model_name: str, params: Params, paths: ProbePaths | None = None) -> list[dict]:
    """Run every configured probe for one task and model; write the table, figure and summary."""
    registry = get_registry()
    task = registry.task(task_name)
    registry.get("model", model_name)
    inputs = [registry.get("probe-input", name) for name in params.probe.inputs]
    paths = paths or default_paths(task_name, model_name)
    size = read_dataset(paths.data).size
    _, process, network = load_trained(paths.model, params)
    network.eval()
    settings = params.probe
    classifier = None
    if any(probe_input.needs_classifier for probe_input in inputs):
        from rulekit.classifier.network import load_classifier

        classifier = load_classifier(paths.classifier)
    context = ProbeContext(task=task, size=size, seed=settings.seed, process=process, network=network, classifier=classifier)
    rows = probe_task(
        context,
        inputs,
        list(settings.deltas),
        list(settings.levels),
        settings.n_per_class,
        list(settings.estimators),
        settings.test_fraction,
    )
    write_rows_csv(rows, paths.table)
    save_probe_figure(paths.figure, f"{task_name}: how visible is a fine-rule violation? ({model_name})", rows)
    write_json_atomic(paths.summary, {"task": task_name, "model": model_name, "best_auc": summarize(rows)})
    return rows
