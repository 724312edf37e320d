"""The task API: a family of synthetic images whose features obey a hidden rule.

A task draws features from its prior, renders them to images, measures them back from pixels,
and judges them against its fine rule (``residual``, 0 on rule-abiding features) and its coarse
rule (``coarse_ok``). It can also move features off the fine rule by an exact amount δ
(``violate``) and draw features that break the coarse rule (``coarse_violations``). A task that
also implements ``soft_read`` offers ``soft_residual``, the same residual read differentiably
from torch images, for guidance that follows its gradient.

Subclasses implement the lower-case hooks without checks (``sample_features``, ``draw``,
``read``, ...); the public methods here check their inputs once, for every task.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from rulekit.errors import RulekitError

if TYPE_CHECKING:
    import torch


class Task(ABC):
    """Base class of every rule task; register instances through the ``rulekit_tasks`` hook.

    Features are float arrays (n, k) in fractions of the image side, columns named by
    ``feature_names``. Images are float arrays (n, size, size) with values in [0, 1], row 0 at
    the top.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    feature_names: ClassVar[tuple[str, ...]]
    #: The smallest and largest image side the task renders and measures to within 0.2 %.
    min_size: ClassVar[int] = 16
    max_size: ClassVar[int] = 1024
    #: The largest fine-rule violation δ that ``violate`` can realise for every sample.
    max_violation: ClassVar[float] = 0.1
    #: A measured sample is valid when re-rendering its features reproduces the image to within
    #: this fraction of the image's total ink (L1).
    validity_tolerance: ClassVar[float] = 0.25

    # ---- what a task implements -------------------------------------------------------------

    @abstractmethod
    def sample_features(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` rule-abiding feature rows from the task's prior."""

    @abstractmethod
    def draw(self, features: np.ndarray, size: int) -> np.ndarray:
        """Render features to images of side ``size`` (vectorised, anti-aliased)."""

    @abstractmethod
    def read(self, images: np.ndarray) -> np.ndarray:
        """Measure features from images with values in [0, 1]; NaN where a shape is missing."""

    @abstractmethod
    def residual(self, features: np.ndarray) -> np.ndarray:
        """Signed distance of each row from the fine rule, in fractions of the image side.

        Written once for numpy arrays and torch tensors alike (arithmetic, builtin ``abs``,
        ``column_stack``, ``signed_largest``), so ``soft_residual`` differentiates the same rule.
        """

    @abstractmethod
    def coarse_ok(self, features: np.ndarray) -> np.ndarray:
        """Whether each row keeps the coarse (qualitative) rule."""

    @abstractmethod
    def violation_candidates(self, features: np.ndarray, delta: float) -> np.ndarray:
        """Ways (c, n, k) to move each row off the fine rule so that ``|residual| == delta``."""

    @abstractmethod
    def coarse_violations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` feature rows that break the coarse rule and fit the frame."""

    @abstractmethod
    def in_frame(self, features: np.ndarray) -> np.ndarray:
        """Whether each row can be rendered and measured back (shapes inside, apart)."""

    def constants(self) -> dict[str, float]:
        """The rule's constants, recorded beside generated data."""
        return {}

    def soft_read(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """Features (n, k), differentiable, from torch images whose background is removed
        (``soft.remove_background``): the torch counterpart of ``read``, optional.

        It must agree with ``read`` on rendered images and stay finite on any image. The
        built-in tasks write their measurer once over the estimator modules ``geometry``
        (numpy) and ``soft`` (torch) and call it from both ``read`` and ``soft_read``.
        """
        raise RulekitError(
            f"task {self.name!r} has no differentiable measurer (soft_read); guidance that needs one cannot use it"
        )

    # ---- the checked public API -------------------------------------------------------------

    def check_size(self, size: object) -> int:
        """Return ``size`` if the task can render it, else stop with the accepted range."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise RulekitError(f"image size must be an integer, got {size!r}")
        if not self.min_size <= size <= self.max_size:
            raise RulekitError(
                f"image size {size} is outside what task {self.name!r} can render "
                f"(accepted: {self.min_size} to {self.max_size} pixels)"
            )
        return int(size)

    def _check_features(self, features: np.ndarray) -> np.ndarray:
        return self._check_feature_shape(np.asarray(features, dtype=np.float64))

    def _check_feature_shape(self, features):
        """``features`` (a numpy array or a torch tensor) if it has one column per feature name."""
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise RulekitError(
                f"task {self.name!r} expects features of shape (n, {len(self.feature_names)}) "
                f"({', '.join(self.feature_names)}), got {features.shape}"
            )
        return features

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` rule-abiding feature rows (float64, shape (n, k))."""
        if n < 0:
            raise RulekitError(f"number of samples must be at least 0, got {n}")
        return self._check_features(self.sample_features(rng, n))

    def render(self, features: np.ndarray, size: int) -> np.ndarray:
        """Images (n, size, size), float32 in [0, 1], of the given features."""
        features = self._check_features(features)
        size = self.check_size(size)
        return np.clip(self.draw(features, size), 0.0, 1.0).astype(np.float32, copy=False)

    def _pixels(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise RulekitError(f"images must have shape (n, size, size), got {images.shape}")
        self.check_size(images.shape[-1])
        if images.dtype == np.uint8:
            return remove_background(images.astype(np.float32) / 255.0)
        return remove_background(np.clip(images.astype(np.float32), 0.0, 1.0))

    def measure(self, images: np.ndarray) -> np.ndarray:
        """Features (n, k) read from images; uint8 images are taken as value / 255.

        A generated image's faint background haze is removed first (``remove_background``);
        rendered data has none, so on data the measurement is exact.
        """
        return self._check_features(self.read(self._pixels(images)))

    @property
    def has_soft_measurer(self) -> bool:
        """Whether the task implements ``soft_read``, so that ``soft_residual`` works."""
        return type(self).soft_read is not Task.soft_read

    def soft_residual(self, images: "torch.Tensor") -> "torch.Tensor":
        """Signed residual (n,) of torch images (n, size, size) in [0, 1], differentiable with
        respect to them: ``residual(measure(images))`` in the same units, read by ``soft_read``.

        Meant for a model's estimate of the clean image during sampling: it is finite on any
        image, blank, hazy or noise, and half-precision images are measured in float32.
        """
        import torch

        from rulekit.tasks import soft

        if not isinstance(images, torch.Tensor) or images.ndim != 3 or images.shape[1] != images.shape[2]:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise RulekitError(f"soft_residual needs a torch tensor of shape (n, size, size), got {shape}")
        if not images.is_floating_point():
            raise RulekitError(f"soft_residual needs floating-point images in [0, 1], got {images.dtype}")
        self.check_size(images.shape[-1])
        pixels = soft.remove_background(images.to(torch.promote_types(images.dtype, torch.float32)))
        return self.residual(self._check_feature_shape(self.soft_read(pixels)))

    def valid(self, images: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Whether the measurer found the shapes: measured features re-render to the image
        (without its background haze) to within ``validity_tolerance`` of its ink."""
        pixels = self._pixels(images)
        features = self._check_features(self.read(pixels)) if features is None else self._check_features(features)
        finite = np.all(np.isfinite(features), axis=1)
        usable = finite & self.in_frame(np.where(finite[:, None], features, 0.0))
        rerendered = self.render(np.where(usable[:, None], features, 0.0), pixels.shape[-1])
        ink = pixels.sum(axis=(1, 2))
        error = np.abs(pixels - rerendered).sum(axis=(1, 2))
        return usable & (error <= self.validity_tolerance * np.maximum(ink, 1e-12))

    def violate(self, features: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
        """Rows moved off the fine rule so that ``|residual| == delta``, each in a random feasible way."""
        features = self._check_features(features)
        if not 0.0 <= delta <= self.max_violation:
            raise RulekitError(
                f"violation δ={delta} is outside what task {self.name!r} supports (accepted: 0 to {self.max_violation})"
            )
        if delta == 0.0:
            return features.copy()
        candidates = np.asarray(self.violation_candidates(features, delta), dtype=np.float64)
        feasible = np.stack([self.in_frame(candidate) for candidate in candidates])
        if not feasible.any(axis=0).all():
            raise RuntimeError(f"task {self.name!r} cannot move every sample off its rule by {delta}")
        # A random priority among the feasible ways keeps every direction of violation represented.
        priority = np.where(feasible, rng.random(feasible.shape), -1.0)
        choice = np.argmax(priority, axis=0)
        return candidates[choice, np.arange(len(features))]

    def violate_coarse(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` feature rows that break the coarse rule."""
        if n < 0:
            raise RulekitError(f"number of samples must be at least 0, got {n}")
        return self._check_features(self.coarse_violations(rng, n))


#: Pixels this far (in the noise's standard deviations) above the background level are ink.
BACKGROUND_SIGMAS = 4.0
#: The smallest ink threshold: half a uint8 level, so stored data loses nothing.
MIN_INK = 0.5 / 255


def remove_background(pixels: np.ndarray) -> np.ndarray:
    """Images with their background level subtracted and the haze around it set to 0.

    Every task's shapes cover less than half of the image, so the median pixel is background;
    the spread of the background is read from the gap between the median and the lower
    quartile (0.674 σ for Gaussian haze). Pixels within ``BACKGROUND_SIGMAS`` σ of the
    background become 0 and the rest are rescaled so that full ink stays 1. Rendered images
    have an exactly zero background and pass through unchanged.
    """
    n, height, width = pixels.shape
    flat = pixels.reshape(n, -1)
    count = flat.shape[1]
    quartile, median = (count - 1) // 4, (count - 1) // 2
    ranked = np.partition(flat, (quartile, median), axis=1)
    background = ranked[:, median]
    sigma = (background - ranked[:, quartile]) / 0.674
    threshold = background + np.maximum(BACKGROUND_SIGMAS * sigma, MIN_INK)
    scale = 1.0 / np.maximum(1.0 - background, 1e-6)
    cleaned = np.where(flat >= threshold[:, None], (flat - background[:, None]) * scale[:, None], 0.0)
    return cleaned.reshape(n, height, width).astype(np.float32, copy=False)


def _torch_of(values: object):
    """The torch module if ``values`` is a torch tensor, else None; never imports torch itself."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(values, torch.Tensor) else None


def column_stack(columns: Sequence) -> np.ndarray:
    """Columns (each (n,)) side by side as (n, m): a numpy array, or a torch tensor if they are."""
    torch = _torch_of(columns[0])
    return np.stack(columns, axis=1) if torch is None else torch.stack(list(columns), dim=1)


def signed_largest(deviations: np.ndarray) -> np.ndarray:
    """Per row, the deviation (n, m) of largest magnitude with its sign: the L∞ residual.

    A torch tensor gives a torch tensor whose gradient flows to the chosen deviation.
    """
    torch = _torch_of(deviations)
    if torch is not None:
        return deviations.gather(1, deviations.abs().argmax(dim=1, keepdim=True))[:, 0]
    deviations = np.asarray(deviations, dtype=np.float64)
    pick = np.argmax(np.abs(deviations), axis=1)
    return deviations[np.arange(len(deviations)), pick]
