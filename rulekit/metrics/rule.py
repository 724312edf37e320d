"""Rule metrics: how often generated samples are readable, keep the coarse rule and keep the fine rule.

Validity is judged over all samples; every other rule metric over the valid samples only, since an
invalid sample has no features to judge.
"""

from __future__ import annotations

import numpy as np

from rulekit.hookspecs import hookimpl
from rulekit.metrics.base import Metric, MetricInput, undefined


def signed_residuals(data: MetricInput) -> np.ndarray:
    """Each generated sample's signed residual from the fine rule (NaN where invalid), computed once."""

    def compute() -> np.ndarray:
        residual = np.full(data.n, np.nan)
        if data.valid.any():
            residual[data.valid] = data.task.residual(data.features[data.valid])
        return residual

    return data.cached("rule.residual", compute)


def coarse_kept(data: MetricInput) -> np.ndarray:
    """Whether each generated sample keeps the coarse rule (False where invalid), computed once."""

    def compute() -> np.ndarray:
        kept = np.zeros(data.n, dtype=bool)
        if data.valid.any():
            kept[data.valid] = data.task.coarse_ok(data.features[data.valid])
        return kept

    return data.cached("rule.coarse_ok", compute)


def data_residuals(data: MetricInput) -> np.ndarray:
    """The training data's signed residuals, from its measured features: the measurer's noise floor."""

    def compute() -> np.ndarray:
        features = data.reference_features
        finite = np.all(np.isfinite(features), axis=1)
        return data.task.residual(features[finite]) if finite.any() else np.empty(0)

    return data.cached("rule.data_residual", compute)


class Validity(Metric):
    name = "validity"
    description = "Fraction of generated samples in which the measurer finds the task's shapes."

    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        if index.size == 0:
            return undefined(["validity"])
        return {"validity": float(np.mean(data.valid[index]))}


class CoarseAccuracy(Metric):
    name = "coarse-accuracy"
    description = "Fraction of valid samples that keep the task's coarse (qualitative) rule."

    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        rows = data.valid_rows(index)
        if rows.size == 0:
            return undefined(["coarse_accuracy"])
        return {"coarse_accuracy": float(np.mean(coarse_kept(data)[rows]))}


class Residual(Metric):
    name = "residual"
    description = "Mean and median |residual| of valid samples from the fine rule, in image sides."

    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        rows = data.valid_rows(index)
        if rows.size == 0:
            return undefined(["mean_abs_residual", "median_abs_residual"])
        distance = np.abs(signed_residuals(data)[rows])
        return {"mean_abs_residual": float(np.mean(distance)), "median_abs_residual": float(np.median(distance))}


class FineConformity(Metric):
    name = "fine-conformity"
    description = "Fraction of valid samples within 0.5 %, 1 %, 2 % and 5 % of the image side of the fine rule."

    #: Tolerances on |residual|, in fractions of the image side.
    tolerances = (0.005, 0.01, 0.02, 0.05)

    @staticmethod
    def key(tolerance: float) -> str:
        """The reported name for one tolerance: ``fine_conformity_0.5pct`` for 0.005."""
        return f"fine_conformity_{tolerance * 100:g}pct"

    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        keys = [self.key(tolerance) for tolerance in self.tolerances]
        rows = data.valid_rows(index)
        if rows.size == 0:
            return undefined(keys)
        distance = np.abs(signed_residuals(data)[rows])
        within = np.mean(distance[:, None] <= np.asarray(self.tolerances)[None, :], axis=0)
        return {key: float(fraction) for key, fraction in zip(keys, within)}


def band(residual: np.ndarray) -> tuple[float, float]:
    """The spread of signed residuals: standard deviation, and 95th minus 5th percentile."""
    if residual.size == 0:
        return np.nan, np.nan
    low, high = np.percentile(residual, [5.0, 95.0])
    return float(np.std(residual)), float(high - low)


class ResidualBand(Metric):
    name = "residual-band"
    description = "Spread of valid samples' signed residuals beside the training data's own (the noise floor)."

    keys = ("residual_std", "residual_p90_width", "data_residual_std", "data_residual_p90_width", "band_ratio")

    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        data_std, data_width = data.cached("rule.data_band", lambda: band(data_residuals(data)))
        rows = data.valid_rows(index)
        if rows.size == 0:
            return {**undefined(self.keys), "data_residual_std": data_std, "data_residual_p90_width": data_width}
        std, width = band(signed_residuals(data)[rows])
        # Measured training data of every task spreads a little (quantisation, anti-aliasing); a
        # reference with no spread at all gives no scale to compare with, so the ratio is undefined.
        ratio = std / data_std if data_std > 0 else np.nan
        return {
            "residual_std": std,
            "residual_p90_width": width,
            "data_residual_std": data_std,
            "data_residual_p90_width": data_width,
            "band_ratio": float(ratio),
        }


@hookimpl
def rulekit_metrics() -> list[Metric]:
    return [Validity(), CoarseAccuracy(), Residual(), FineConformity(), ResidualBand()]
