"""The ``train`` stage: train one model family on one task's data, into ``models/<task>/<model>/``."""

from __future__ import annotations

from pathlib import Path

from rulekit.params import Params
from rulekit.training import TrainingPaths, train_model


def default_paths(task_name: str, model_name: str, root: Path = Path(".")) -> TrainingPaths:
    """Where ``rulekit train`` reads and writes unless told otherwise."""
    return TrainingPaths(
        data=root / "data" / task_name,
        model=root / "models" / task_name / model_name,
        checkpoints=root / "checkpoints" / task_name / model_name,
        loss_curve=root / "plots" / "loss" / f"{task_name}-{model_name}.csv",
    )


def train(task_name: str, model_name: str, params: Params, paths: TrainingPaths | None = None) -> dict:
    """Train and export one model; see ``rulekit.training.train_model``."""
    return train_model(task_name, model_name, params, paths or default_paths(task_name, model_name))
