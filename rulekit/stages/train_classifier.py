"""The ``train_classifier`` stage: the noise-conditioned rule classifier of one task and model.

Reads the training data, the model's unguided samples and the trained model (for its noise
process), trains the classifier that classifier guidance steers with, and writes it to
``classifiers/TASK/MODEL/``, its held-out AUC table and figure to ``plots/``, and a small
summary to ``metrics/TASK/MODEL/classifier.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rulekit.classifier.network import save_classifier
from rulekit.classifier.train import evaluate_classifier, rejected_samples, split_held_out, train_rule_classifier
from rulekit.dataset import ARRAYS_FILE, read_dataset, read_image_set
from rulekit.errors import DataFileError
from rulekit.figures import save_classifier_figure
from rulekit.params import Params
from rulekit.registry import get_registry
from rulekit.stages.sample import load_trained
from rulekit.storage import write_csv_atomic, write_json_atomic
from rulekit.training import MODEL_INFO_FILE

#: The columns of the held-out table, in the order the CSV file writes them.
COLUMNS = ("source", "delta", "level", "auc", "accuracy", "n")


@dataclass(frozen=True)
class ClassifierPaths:
    """Where one classifier run reads and writes."""

    data: Path
    samples: Path
    model: Path
    classifier: Path
    metrics: Path
    table: Path
    figure: Path


def default_paths(task: str, model: str, root: Path = Path(".")) -> ClassifierPaths:
    return ClassifierPaths(
        data=root / "data" / task,
        samples=root / "samples" / task / model / "none",
        model=root / "models" / task / model,
        classifier=root / "classifiers" / task / model,
        metrics=root / "metrics" / task / model / "classifier.json",
        table=root / "plots" / "classifier" / f"{task}-{model}.csv",
        figure=root / "plots" / "figures" / f"classifier-{task}-{model}.png",
    )


def _require(path: Path, command: str) -> None:
    if not path.exists():
        raise DataFileError(f"{path} does not exist; make it first: {command}")


def _key(value: float) -> str:
    return f"{value:g}"


def summarize(rows: list[dict]) -> dict:
    """The held-out table in the shape ``dvc metrics diff`` compares: AUC of own samples by level,
    and AUC and accuracy of synthetic violations by level and δ."""
    own = {f"level_{_key(row['level'])}": row["auc"] for row in rows if row["source"] == "own-samples"}
    synthetic_auc: dict[str, dict[str, float]] = {}
    synthetic_accuracy: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["source"] == "synthetic":
            level, delta = f"level_{_key(row['level'])}", f"delta_{_key(row['delta'])}"
            synthetic_auc.setdefault(level, {})[delta] = row["auc"]
            synthetic_accuracy.setdefault(level, {})[delta] = row["accuracy"]
    return {"auc_own_samples": own, "auc_synthetic": synthetic_auc, "accuracy_synthetic": synthetic_accuracy}


def _headline(rows: list[dict]) -> dict:
    """The clearest single numbers: at the lowest evaluated level, the own-samples AUC and the
    synthetic AUC at the smallest and largest δ."""
    lowest = min(row["level"] for row in rows)
    own = [row["auc"] for row in rows if row["source"] == "own-samples" and row["level"] == lowest]
    synthetic = sorted((row["delta"], row["auc"]) for row in rows if row["source"] == "synthetic" and row["level"] == lowest)
    return {
        "level": lowest,
        "auc_own_samples": own[0] if own else None,
        "auc_smallest_delta": synthetic[0][1],
        "auc_largest_delta": synthetic[-1][1],
    }


def write_rows_csv(rows: list[dict], path: str | Path) -> None:
    """Write held-out rows as CSV with the columns ``COLUMNS``, atomically; None is written empty."""
    write_csv_atomic(path, COLUMNS, rows)


def train_classifier(task_name: str, model_name: str, params: Params, paths: ClassifierPaths | None = None) -> dict:
    """Train and evaluate the rule classifier of one task and model; write it, its metrics, table
    and figure; return a summary (image counts, seconds, final loss, held-out AUCs)."""
    registry = get_registry()
    task = registry.task(task_name)
    registry.get("model", model_name)
    paths = paths or default_paths(task_name, model_name)
    _require(paths.data / ARRAYS_FILE, f"rulekit generate {task_name}")
    _require(paths.model / MODEL_INFO_FILE, f"rulekit train {task_name} --model {model_name}")
    _require(paths.samples / ARRAYS_FILE, f"rulekit sample {task_name} --model {model_name}")
    data = read_dataset(paths.data)
    samples = read_image_set(paths.samples, extras=("valid",))
    model_info, process, _ = load_trained(paths.model, params)
    sizes = ((paths.samples / ARRAYS_FILE, samples.size), (paths.model / MODEL_INFO_FILE, model_info.get("size")))
    for where, size in sizes:
        if size != data.size:
            raise DataFileError(
                f"{where} is for {size}-pixel images but {paths.data} holds {data.size}-pixel ones; "
                "re-run the stage that wrote it"
            )

    settings = params.classifier
    rejected = rejected_samples(task, samples, settings.reject_threshold)
    split = split_held_out(data.images, rejected, settings.holdout_fraction, settings.seed)
    trained = train_rule_classifier(task, process, split, settings, label=f"train-classifier {task_name} {model_name}")
    rows = evaluate_classifier(trained.classifier, task, process, split, settings)

    counts = {
        "n_positives": int(len(split.positives)),
        "n_own_negatives": int(len(split.own_negatives)),
        "n_held_out_positives": int(len(split.held_out_positives)),
        "n_held_out_negatives": int(len(split.held_out_negatives)),
    }
    metrics = {"task": task_name, "model": model_name, **counts, "final_loss": trained.final_loss, **summarize(rows)}
    info = {
        "task": task_name,
        "model": model_name,
        "size": data.size,
        "model_settings": model_info.get("model_settings"),
        "classifier": settings.model_dump(),
        **counts,
        "seconds": trained.seconds,
        "final_loss": trained.final_loss,
    }
    save_classifier(trained.classifier, paths.classifier, info)
    write_json_atomic(paths.metrics, metrics)
    write_rows_csv(rows, paths.table)
    save_classifier_figure(paths.figure, f"{task_name}: held-out rule classifier ({model_name})", rows)
    return {**counts, "seconds": trained.seconds, "final_loss": trained.final_loss, "headline": _headline(rows), **summarize(rows)}
