"""Detectability probes: fit classifiers that tell rule-abiding images from violating ones.

For each violation δ, rule-abiding images and, drawn independently, images that break the fine
rule by exactly δ are rendered once, split into a training and a held-out set, and turned into
features by each probe input (at each noise level where the input uses one). Each estimator is
fitted on the training features and scored by its held-out ROC AUC: 0.5 means the violation is
invisible through that input, 1 means it is perfectly detectable.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import numpy as np

from rulekit.probes.base import ProbeContext, ProbeError, ProbeInput
from rulekit.progress import progress_bar
from rulekit.storage import write_csv_atomic

#: The columns of a probe result row, in the order the CSV file writes them.
COLUMNS = ("task", "input", "estimator", "delta", "level", "auc", "n_train", "n_test")
#: Width of the MLP probe's hidden layer and its epochs; fewer of either make probes faster.
MLP_HIDDEN_UNITS = 128
MLP_EPOCHS = 100


def _logistic(random_state: int):
    from sklearn.linear_model import LogisticRegression

    # lbfgs is deterministic; random_state is taken for a uniform factory signature.
    return LogisticRegression(C=1.0, max_iter=5000)


def _mlp(random_state: int):
    from sklearn.neural_network import MLPClassifier

    # A violation is |residual| = δ in either direction, so its evidence is not linear in the
    # pixels; one hidden layer finds it. On ~1000 rows of ~1000 features this fits in under a
    # second, where gradient-boosted trees took tens of seconds once their threads competed with
    # torch's. Early stopping on a validation split sometimes quit at chance before learning
    # anything; a fixed budget of epochs with strong weight decay did not, and the decay suits
    # noised inputs, whose noise is spread evenly over every pixel.
    return MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN_UNITS,), alpha=1.0, max_iter=MLP_EPOCHS, random_state=random_state)

#: Estimator name -> factory of a fresh, unfitted scikit-learn classifier given a random state.
#: ``probe_task`` centres and scales the features before fitting (see ``_scaled``).
ESTIMATORS: dict[str, Callable[[int], Any]] = {"logistic": _logistic, "mlp": _mlp}


def _check_arguments(
    context: ProbeContext,
    inputs: list[ProbeInput],
    deltas: list[float],
    levels: list[float],
    n_per_class: int,
    estimators: list[str],
    test_fraction: float,
) -> None:
    task = context.task
    for delta in deltas:
        if not 0.0 <= delta <= task.max_violation:
            raise ProbeError(
                f"violation δ={delta} is outside what task {task.name!r} supports (accepted: 0 to {task.max_violation})"
            )
    for level in levels:
        if not 0.0 <= level <= 1.0:
            raise ProbeError(f"noise level {level} is outside [0, 1] (0 = data, 1 = pure noise)")
    if any(probe_input.uses_noise_level for probe_input in inputs) and not levels:
        raise ProbeError("probe inputs that use a noise level need at least one level")
    for name in estimators:
        if name not in ESTIMATORS:
            raise ProbeError(f"unknown estimator {name!r}; known estimators: {', '.join(ESTIMATORS)}")
    for probe_input in inputs:
        if probe_input.needs_model and (context.process is None or context.network is None):
            raise ProbeError(
                f"probe input {probe_input.name!r} needs a trained model's process and network; none was given"
            )
        if probe_input.needs_classifier and context.classifier is None:
            raise ProbeError(f"probe input {probe_input.name!r} needs the model's trained rule classifier; none was given")
    if not 0.0 < test_fraction < 1.0:
        raise ProbeError(f"test fraction {test_fraction} is outside (0, 1)")
    n_test = int(np.ceil(2 * n_per_class * test_fraction))
    if min(n_test, 2 * n_per_class - n_test) < 4:
        raise ProbeError(
            f"{n_per_class} images per class with test fraction {test_fraction} leave fewer than two "
            "images of each class to train or test on"
        )


def _seed_for(seed: int, *keys: float) -> np.random.Generator:
    # Keyed by value, not position, so a δ's images and split do not depend on the other δs listed.
    return np.random.default_rng([seed, *(int(round(key * 1e9)) for key in keys)])


def _violation_images(context: ProbeContext, delta: float, n_per_class: int, rng: np.random.Generator):
    task = context.task
    abiding = task.sample(rng, n_per_class)
    # Drawn apart from the abiding rows, so a probe cannot win by comparing an image to its twin.
    violating = task.violate(task.sample(rng, n_per_class), delta, rng)
    images = np.concatenate([task.render(abiding, context.size), task.render(violating, context.size)])
    labels = np.repeat(np.array([0, 1], dtype=np.int64), n_per_class)
    return images, labels


def _scaled(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features centred per column and divided by one scale (the root mean column variance),
    both fitted on the training rows.

    One scale, not one per column: noised near-constant pixels (background, solid ink) would
    otherwise be blown up to unit variance and drown the few pixels that carry the violation.
    """
    mean = train.mean(axis=0, dtype=np.float64)
    scale = float(np.sqrt(train.var(axis=0, dtype=np.float64).mean())) if train.size else 0.0
    scale = scale if scale > 0.0 else 1.0
    return ((train - mean) / scale).astype(np.float32), ((test - mean) / scale).astype(np.float32)


def _held_out_auc(
    name: str, random_state: int, features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray
) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    train_features, test_features = _scaled(features[train], features[test])
    estimator = ESTIMATORS[name](random_state)
    # These matrices are small: a multi-threaded BLAS spends its time waking threads that
    # compete with torch's, and measured ten times slower than one thread on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # The MLP's epoch budget is deliberate; reaching it is not a failure worth a warning.
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(train_features, labels[train])
        # A margin ranks better than probabilities, which saturate at 0 and 1 on separable data.
        if hasattr(estimator, "decision_function"):
            scores = estimator.decision_function(test_features)
        else:
            scores = estimator.predict_proba(test_features)[:, 1]
    return float(roc_auc_score(labels[test], scores))


def probe_task(
    context: ProbeContext,
    inputs: list[ProbeInput],
    deltas: list[float],
    levels: list[float],
    n_per_class: int,
    estimators: list[str],
    test_fraction: float = 0.3,
) -> list[dict]:
    """Held-out ROC AUC of each estimator telling rule-abiding images from images that break the
    fine rule by δ, through each input (at each noise level for inputs that use one).

    Returns one row per (δ, input, level, estimator), in that nesting order, with the keys
    ``COLUMNS``; ``level`` is None for inputs that ignore noise levels. Everything is seeded from
    ``context.seed``: the same arguments give the same rows.
    """
    from sklearn.model_selection import train_test_split

    _check_arguments(context, inputs, deltas, levels, n_per_class, estimators, test_fraction)
    level_lists = [list(levels) if probe_input.uses_noise_level else [None] for probe_input in inputs]
    total = len(deltas) * sum(len(input_levels) for input_levels in level_lists) * len(estimators)
    rows: list[dict] = []
    with progress_bar(f"probe {context.task.name}", total) as progress:
        for delta in deltas:
            rng = _seed_for(context.seed, delta)
            images, labels = _violation_images(context, delta, n_per_class, rng)
            split_state, fit_state = (int(state) for state in rng.integers(0, 2**31, size=2))
            train, test = train_test_split(
                np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=split_state
            )
            for probe_input, input_levels in zip(inputs, level_lists):
                for level in input_levels:
                    features = probe_input.features(images, level, context)
                    for name in estimators:
                        auc = _held_out_auc(name, fit_state, features, labels, train, test)
                        rows.append(
                            {
                                "task": context.task.name,
                                "input": probe_input.name,
                                "estimator": name,
                                "delta": float(delta),
                                "level": None if level is None else float(level),
                                "auc": auc,
                                "n_train": int(len(train)),
                                "n_test": int(len(test)),
                            }
                        )
                        progress.advance(0)
    return rows


def write_rows_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Write probe rows as CSV with the columns ``COLUMNS``, atomically; None is written empty."""
    write_csv_atomic(path, COLUMNS, rows)
