"""The metric API: named numbers that judge generated samples against the task and its training data.

A metric receives one ``MetricInput`` (the generated samples, their measured features and the
training data) and an ``index`` that picks a bootstrap resample of the generated samples; the
training data stays fixed. Work that does not depend on the resample (residuals, nearest
neighbours, sorted marginals) is done once per input and kept in ``MetricInput.cache``, so each
resample costs little more than indexing.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, TypeVar

import numpy as np

from rulekit.errors import RulekitError
from rulekit.tasks.base import Task

T = TypeVar("T")


@dataclass
class MetricInput:
    """Generated samples, measured, and the training data they are judged against.

    ``features`` rows of invalid samples may hold NaN; rows of valid samples must be finite.
    ``reference_features`` are measured from ``reference_images`` (not the features they were
    rendered from), so the measurer's own noise floor is part of the reference.
    """

    task: Task
    images: np.ndarray
    features: np.ndarray
    valid: np.ndarray
    reference_images: np.ndarray
    reference_features: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = _check_images("images", self.images)
        self.reference_images = _check_images("reference_images", self.reference_images)
        if self.images.shape[1:] != self.reference_images.shape[1:]:
            raise RulekitError(
                f"generated images {self.images.shape[1:]} and training images "
                f"{self.reference_images.shape[1:]} differ in size"
            )
        n, m, k = len(self.images), len(self.reference_images), len(self.task.feature_names)
        self.features = _check_features("features", self.features, (n, k))
        self.reference_features = _check_features("reference_features", self.reference_features, (m, k))
        self.valid = np.asarray(self.valid)
        if self.valid.dtype != np.bool_ or self.valid.shape != (n,):
            raise RulekitError(f"valid must be a bool array of shape ({n},), got {self.valid.dtype} {self.valid.shape}")
        if not np.all(np.isfinite(self.features[self.valid])):
            raise RulekitError("features of valid samples must be finite")

    @property
    def n(self) -> int:
        """The number of generated samples."""
        return len(self.images)

    def valid_rows(self, index: np.ndarray) -> np.ndarray:
        """The entries of ``index`` that point at valid samples, repeats kept."""
        return index[self.valid[index]]

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()``, run on first use and kept under ``key`` for every later resample."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


class Metric(ABC):
    """Base class of every metric; register instances through the ``rulekit_metrics`` hook.

    A metric returns the same names on every resample. Where a resample leaves nothing to judge
    (no valid sample), its numbers are NaN, and the bootstrap interval ignores that resample.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        """Named numbers for the resample of the generated samples given by ``index`` (indices into
        ``images``/``features``/``valid``, with repeats); the reference stays fixed."""


def undefined(keys: Iterable[str]) -> dict[str, float]:
    """NaN under each name: the result for a resample with nothing to judge."""
    return dict.fromkeys(keys, math.nan)


def _check_images(label: str, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise RulekitError(f"{label} must be uint8 of shape (n, size, size), got {images.dtype} {images.shape}")
    return images


def _check_features(label: str, features: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.shape != shape:
        raise RulekitError(f"{label} must have shape {shape}, got {features.shape}")
    return features
