"""``perspective``: two objects on the ground, each sized by its distance to the horizon."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from rulekit.hookspecs import hookimpl
from rulekit.tasks import geometry
from rulekit.tasks.base import Task, column_stack, signed_largest

if TYPE_CHECKING:
    import torch


class Perspective(Task):
    """Two squares on the ground below a horizon at yh = 0.85, centred at x = 0.25 and x = 0.75,
    with bottoms at heights y_left, y_right and sides r_left, r_right.

    - fine rule: r = r0 + k · (yh − y) for each object, r0 = 0.04, k = 0.35; the residual is the
      deviation of larger magnitude, with its sign;
    - coarse rule: the lower object is the larger (when their heights differ by at least 0.02);
    - a violation resizes one of the two objects.

    Two objects rather than one make the coarse rule a property of each image. Prior:
    y ~ U[0.05, 0.4] for each, independently. Each square is read in its own half with the
    running-sum edge estimator.
    """

    name = "perspective"
    description = "Two objects on the ground; size r = r0 + k·(yh − y) toward a horizon (a depth rule)."
    feature_names = ("y_left", "r_left", "y_right", "r_right")
    max_violation = 0.08

    horizon = 0.85
    horizon_thickness = 0.02
    r0 = 0.04
    k = 0.35
    y_range = (0.05, 0.4)
    centres = (0.25, 0.75)
    region_top = 0.75
    side_limits = (0.07, 0.4)
    coarse_margin = 0.02

    def constants(self) -> dict[str, float]:
        return {"horizon": self.horizon, "r0": self.r0, "k": self.k}

    def rule(self, y: np.ndarray) -> np.ndarray:
        """The side r that the fine rule gives an object standing at height y."""
        return self.r0 + self.k * (self.horizon - y)

    def sample_features(self, rng: np.random.Generator, n: int) -> np.ndarray:
        y_left = rng.uniform(*self.y_range, size=n)
        y_right = rng.uniform(*self.y_range, size=n)
        return np.stack([y_left, self.rule(y_left), y_right, self.rule(y_right)], axis=1)

    def draw(self, features: np.ndarray, size: int) -> np.ndarray:
        half = self.horizon_thickness / 2
        images = geometry.fixed_box(0.0, 1.0, self.horizon - half, self.horizon + half, size)[None].repeat(
            len(features), axis=0
        )
        for centre, (y, r) in zip(self.centres, (features[:, :2].T, features[:, 2:].T)):
            images += geometry.boxes(centre - r / 2, centre + r / 2, y, y + r, size)
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
        columns = []
        for x_range in ((0.0, 0.5), (0.5, 1.0)):
            pixels, x_offset, y_offset = estimators.region(upright, x_range, (0.0, self.region_top))
            _, centre_y, side = estimators.square(pixels, x_offset, y_offset)
            columns.extend([centre_y - side / 2, side])
        return column_stack(columns) / size

    def residual(self, features: np.ndarray) -> np.ndarray:
        y_left, r_left, y_right, r_right = features.T
        return signed_largest(column_stack([r_left - self.rule(y_left), r_right - self.rule(y_right)]))

    def coarse_ok(self, features: np.ndarray) -> np.ndarray:
        y_left, r_left, y_right, r_right = features.T
        return ((y_left - y_right) * (r_left - r_right) < 0) | (np.abs(y_left - y_right) < self.coarse_margin)

    def violation_candidates(self, features: np.ndarray, delta: float) -> np.ndarray:
        on_rule = features.copy()
        on_rule[:, 1] = self.rule(features[:, 0])
        on_rule[:, 3] = self.rule(features[:, 2])
        candidates = []
        for column in (1, 3):
            for sign in (1.0, -1.0):
                moved = on_rule.copy()
                moved[:, column] += sign * delta
                candidates.append(moved)
        return np.stack(candidates)

    def coarse_violations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        y_left = rng.uniform(*self.y_range, size=n)
        middle = sum(self.y_range) / 2
        gap = rng.uniform(0.1, (self.y_range[1] - self.y_range[0]) / 2, size=n)
        y_right = np.where(y_left < middle, y_left + gap, y_left - gap)
        # Each object gets the size the rule gives the other: the lower one is now the smaller.
        return np.stack([y_left, self.rule(y_right), y_right, self.rule(y_left)], axis=1)

    def in_frame(self, features: np.ndarray) -> np.ndarray:
        y_left, r_left, y_right, r_right = features.T
        with np.errstate(invalid="ignore"):
            ok = np.ones(len(features), dtype=bool)
            for y, r in ((y_left, r_left), (y_right, r_right)):
                ok &= (r >= self.side_limits[0]) & (r <= self.side_limits[1])
                ok &= (y >= 0.01) & (y + r <= self.region_top - 0.03)
        return ok


@hookimpl
def rulekit_tasks() -> list[Task]:
    return [Perspective()]
