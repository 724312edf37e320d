"""``bars``: two bars on a common ground line; the right one's height is fixed by the left one's."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from rulekit.hookspecs import hookimpl
from rulekit.tasks import geometry
from rulekit.tasks.base import Task, column_stack

if TYPE_CHECKING:
    import torch


class Bars(Task):
    """Two bars standing on the ground line y = 0.1, their heights ``a`` (left) and ``b`` (right).

    - fine rule: b = 0.5 a + 0.2, with a ~ U[0.2, 0.8];
    - coarse rule: the taller bar is the one the rule makes taller (b > a exactly when a < 0.4),
      where the rule's two heights differ by at least 0.02; nearer a = 0.4 either order is kept;
    - a violation moves b off the line.

    The left bar spans x in [0.15, 0.35] and the right one [0.65, 0.85]; each height is read as the
    bar's area (exact under area anti-aliasing) divided by its known width.
    """

    name = "bars"
    description = "Two bars; the right bar's height is 0.5 × the left's + 0.2 (a length rule)."
    feature_names = ("a", "b")
    min_size = 8
    max_violation = 0.25

    slope = 0.5
    intercept = 0.2
    a_range = (0.2, 0.8)
    ground = 0.1
    width = 0.2
    left_x = 0.15
    right_x = 0.65
    max_height = 0.85
    min_height = 0.02
    coarse_margin = 0.02

    def constants(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept, "ground": self.ground, "width": self.width}

    def rule(self, a: np.ndarray) -> np.ndarray:
        """The height b that the fine rule gives the right bar."""
        return self.slope * a + self.intercept

    def sample_features(self, rng: np.random.Generator, n: int) -> np.ndarray:
        a = rng.uniform(*self.a_range, size=n)
        return np.stack([a, self.rule(a)], axis=1)

    def draw(self, features: np.ndarray, size: int) -> np.ndarray:
        n = len(features)
        ground = np.full(n, self.ground)
        images = geometry.boxes(
            np.full(n, self.left_x), np.full(n, self.left_x + self.width), ground, ground + features[:, 0], size
        )
        images += geometry.boxes(
            np.full(n, self.right_x), np.full(n, self.right_x + self.width), ground, ground + features[:, 1], size
        )
        return images

    def read(self, images: np.ndarray) -> np.ndarray:
        return self.read_with(geometry, images)

    def soft_read(self, pixels: torch.Tensor) -> torch.Tensor:
        from rulekit.tasks import soft

        return self.read_with(soft, pixels)

    def read_with(self, estimators: ModuleType, images):
        """Features read through ``estimators``: ``geometry`` (numpy) or ``soft`` (torch)."""
        size = images.shape[-1]
        upright = estimators.upright(images)
        width_px = self.width * size
        heights = []
        for x_range in ((0.0, 0.5), (0.5, 1.0)):
            pixels, _, _ = estimators.region(upright, x_range, (0.0, 1.0))
            heights.append(estimators.area_px(pixels) / width_px / size)
        return column_stack(heights)

    def residual(self, features: np.ndarray) -> np.ndarray:
        return features[:, 1] - self.rule(features[:, 0])

    def coarse_ok(self, features: np.ndarray) -> np.ndarray:
        a, b = features[:, 0], features[:, 1]
        rule_gap = self.rule(a) - a
        return (np.sign(b - a) == np.sign(rule_gap)) | (np.abs(rule_gap) < self.coarse_margin)

    def violation_candidates(self, features: np.ndarray, delta: float) -> np.ndarray:
        up, down = features.copy(), features.copy()
        up[:, 1] = self.rule(features[:, 0]) + delta
        down[:, 1] = self.rule(features[:, 0]) - delta
        return np.stack([up, down])

    def coarse_violations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # Away from a = 0.4 the rule fixes the order, so swap it: put b on the other side of a.
        low = rng.uniform(self.a_range[0], 0.35, size=n)
        high = rng.uniform(0.45, self.a_range[1], size=n)
        a = np.where(rng.random(n) < 0.5, low, high)
        gap = rng.uniform(0.05, 0.15, size=n)
        b = np.where(self.rule(a) > a, a - gap, a + gap)
        return np.stack([a, np.clip(b, self.min_height, self.max_height)], axis=1)

    def in_frame(self, features: np.ndarray) -> np.ndarray:
        heights = features[:, :2]
        return np.all((heights >= self.min_height) & (heights <= self.max_height), axis=1)


@hookimpl
def rulekit_tasks() -> list[Task]:
    return [Bars()]
