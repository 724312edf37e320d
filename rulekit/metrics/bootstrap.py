"""Bootstrap intervals: every metric's value on the samples as drawn, and how much it would vary.

The generated samples are resampled with replacement; the training data is the fixed yardstick,
so it is never resampled. All metrics of one call see the same resamples, so their intervals
describe the same uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rulekit.errors import RulekitError
from rulekit.metrics.base import Metric, MetricInput


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the samples as drawn, with a percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def evaluate(
    metric: Metric, data: MetricInput, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Estimate]:
    """Each number of ``metric``, on the samples as drawn, with its bootstrap interval."""
    return evaluate_all([metric], data, n_resamples, confidence, seed)


def evaluate_all(
    metrics: list[Metric], data: MetricInput, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Estimate]:
    """Every number of every metric, with bootstrap intervals from one shared set of resamples.

    The interval is the central ``confidence`` range of the values over ``n_resamples``
    resamples drawn from a generator seeded with ``seed``; resamples where a number is NaN are
    left out, and a number that is NaN on every resample has a NaN interval. Two metrics that
    produce the same name are an error.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise RulekitError(f"number of bootstrap resamples must be an integer of at least 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise RulekitError(f"bootstrap confidence must lie strictly between 0 and 1, got {confidence!r}")

    values: dict[str, float] = {}
    producers: dict[str, str] = {}
    produced: list[set[str]] = []
    for metric in metrics:
        result = metric.compute(data, np.arange(data.n))
        for key, value in result.items():
            if key in producers:
                raise RulekitError(f"metrics {producers[key]!r} and {metric.name!r} both produce {key!r}")
            producers[key] = metric.name
            values[key] = float(value)
        produced.append(set(result))

    keys = list(values)
    column = {key: position for position, key in enumerate(keys)}
    resampled = np.empty((n_resamples, len(keys)))
    rng = np.random.default_rng(seed)
    for row in range(n_resamples):
        index = rng.integers(0, data.n, size=data.n) if data.n else np.empty(0, dtype=np.intp)
        for metric, expected in zip(metrics, produced):
            result = metric.compute(data, index)
            if result.keys() != expected:
                raise RulekitError(
                    f"metric {metric.name!r} returned {sorted(result)} on a resample but {sorted(expected)} "
                    "on the full sample"
                )
            for key, value in result.items():
                resampled[row, column[key]] = value

    tail = 50.0 * (1.0 - confidence)
    estimates = {}
    for key in keys:
        low, high = _interval(resampled[:, column[key]], tail)
        estimates[key] = Estimate(values[key], low, high)
    return estimates


def _interval(values: np.ndarray, tail: float) -> tuple[float, float]:
    known = values[~np.isnan(values)]
    if known.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(known, [tail, 100.0 - tail])
    return float(low), float(high)
