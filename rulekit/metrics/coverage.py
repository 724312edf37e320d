"""Coverage: whether valid generated samples spread over each feature as the training data does.

A model that has collapsed onto a few configurations can keep every rule perfectly; the
1-D Wasserstein distance between each feature's generated and training marginals shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rulekit.hookspecs import hookimpl
from rulekit.metrics.base import Metric, MetricInput, undefined


@dataclass(frozen=True)
class Marginals:
    """Each feature's generated and training marginals, arranged so that the Wasserstein-1
    distance of any reweighting of the generated values is a weighted sum with no sorting.

    For feature j, the generated values x and training values y are pooled and sorted into z;
    W1 = Σᵢ |Fₓ(zᵢ) − F_y(zᵢ)| (zᵢ₊₁ − zᵢ), the same sum ``scipy.stats.wasserstein_distance``
    evaluates. F_y, the gaps and how many sorted x lie at or below each zᵢ are fixed; a resample
    only changes how much weight each x carries.
    """

    #: (n,) position of each generated sample among the valid ones, −1 where invalid.
    position: np.ndarray
    #: (k, n_valid) rank of each valid sample's value among the valid values of feature j.
    rank: np.ndarray
    #: (k, L) how many of feature j's sorted valid values lie at or below each pooled point.
    below: np.ndarray
    #: (k, L) the training marginal's CDF at each pooled point.
    data_cdf: np.ndarray
    #: (k, L) gap from each pooled point to the next.
    gap: np.ndarray

    @classmethod
    def build(cls, values: np.ndarray, valid: np.ndarray, reference: np.ndarray) -> "Marginals":
        """Arrange generated ``values`` (n, k), of which rows ``valid`` count, against ``reference`` (m, k)."""
        position = np.full(len(values), -1)
        position[valid] = np.arange(np.count_nonzero(valid))
        generated = values[valid]
        n_valid, k = generated.shape
        pooled_length = n_valid + len(reference) - 1
        rank = np.empty((k, n_valid), dtype=np.intp)
        below = np.empty((k, pooled_length), dtype=np.intp)
        data_cdf = np.empty((k, pooled_length))
        gap = np.empty((k, pooled_length))
        for j in range(k):
            order = np.argsort(generated[:, j], kind="stable")
            rank[j, order] = np.arange(n_valid)
            pooled = np.sort(np.concatenate([generated[:, j], reference[:, j]]))
            points = pooled[:-1]
            below[j] = np.searchsorted(generated[order, j], points, side="right")
            data_cdf[j] = np.searchsorted(np.sort(reference[:, j]), points, side="right") / len(reference)
            gap[j] = np.diff(pooled)
        return cls(position, rank, below, data_cdf, gap)

    def distances(self, index: np.ndarray) -> np.ndarray:
        """(k,) Wasserstein-1 distance per feature between the resample ``index`` (its valid
        entries, repeats counted) and the training data; NaN when no entry is valid."""
        rows = self.position[index]
        rows = rows[rows >= 0]
        k, n_valid = self.rank.shape
        if rows.size == 0:
            return np.full(k, np.nan)
        # One bincount over all features: feature j's ranks are shifted into their own block.
        shifted = self.rank[:, rows] + (np.arange(k) * n_valid)[:, None]
        weight = np.bincount(shifted.ravel(), minlength=k * n_valid).reshape(k, n_valid)
        cumulative = np.concatenate([np.zeros((k, 1)), np.cumsum(weight, axis=1)], axis=1) / rows.size
        generated_cdf = np.take_along_axis(cumulative, self.below, axis=1)
        return np.sum(np.abs(generated_cdf - self.data_cdf) * self.gap, axis=1)


def marginals(data: MetricInput) -> Marginals | None:
    """The input's ``Marginals``, built once; None when the training data has no finite row."""

    def compute() -> Marginals | None:
        reference = data.reference_features
        reference = reference[np.all(np.isfinite(reference), axis=1)]
        if len(reference) == 0:
            return None
        return Marginals.build(data.features, data.valid, reference)

    return data.cached("coverage.marginals", compute)


class Coverage(Metric):
    name = "coverage"
    description = "Wasserstein-1 distance between valid samples' and training data's marginal of each feature."

    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        keys = [f"wasserstein_{feature}" for feature in data.task.feature_names]
        arranged = marginals(data)
        if arranged is None:
            return undefined([*keys, "wasserstein_mean"])
        distance = arranged.distances(index)
        return {**dict(zip(keys, distance.tolist())), "wasserstein_mean": float(np.mean(distance))}


@hookimpl
def rulekit_metrics() -> list[Metric]:
    return [Coverage()]
