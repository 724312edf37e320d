"""``shadow``: a sun, a pole and the pole's shadow, whose length follows from similar triangles."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from rulekit.hookspecs import hookimpl
from rulekit.tasks import geometry
from rulekit.tasks.base import Task, column_stack

if TYPE_CHECKING:
    import torch


class Shadow(Task):
    """A square sun at (xs, ys), a pole of height H = 0.2 standing at xp = 0.5 on the ground
    y = 0.25, and its shadow: a strip below the ground whose signed length L runs from the pole's
    edge away from the sun (L > 0 to the right).

    - fine rule: |L| = H · |xp − xs| / (ys − 0.25 − H), similar triangles for a thin pole;
    - coarse rule: the shadow falls on the side away from the sun (when the sun is at least 0.02
      from overhead);
    - a violation makes the shadow longer or shorter than the geometry allows.

    Prior: xs ~ U[0.15, 0.85], ys ~ U[0.7, 0.88]. The sun is a square of side 0.12; the pole spans
    x in [0.46, 0.54] and the shadow strip y in [0.10, 0.16]. The sun's centre is read with the
    running-sum edge estimator, the shadow's length as its area over its known thickness, and its
    direction from which side of the pole holds the ink.
    """

    name = "shadow"
    description = "A sun, a pole and its shadow; |L| = H·|xp − xs| / (ys − ground − H) (a geometric rule)."
    feature_names = ("xs", "ys", "L")
    max_violation = 0.2

    pole_height = 0.2
    pole_x = 0.5
    pole_half_width = 0.04
    ground = 0.25
    sun_side = 0.12
    xs_range = (0.15, 0.85)
    ys_range = (0.7, 0.88)
    strip = (0.10, 0.16)
    sun_region_bottom = 0.55
    strip_region_top = 0.205
    max_length = 0.44
    coarse_margin = 0.02

    def constants(self) -> dict[str, float]:
        return {
            "pole_height": self.pole_height,
            "pole_x": self.pole_x,
            "ground": self.ground,
            "sun_side": self.sun_side,
            "strip_thickness": self.strip[1] - self.strip[0],
        }

    def rule(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The shadow length |L| that the geometry gives for a sun at (xs, ys)."""
        return self.pole_height * abs(self.pole_x - xs) / (ys - self.ground - self.pole_height)

    def away_from_sun(self, xs: np.ndarray) -> np.ndarray:
        """+1 where the shadow should point right, −1 where left (right when overhead)."""
        return np.where(xs > self.pole_x, -1.0, 1.0)

    def sample_features(self, rng: np.random.Generator, n: int) -> np.ndarray:
        xs = rng.uniform(*self.xs_range, size=n)
        ys = rng.uniform(*self.ys_range, size=n)
        return np.stack([xs, ys, self.away_from_sun(xs) * self.rule(xs, ys)], axis=1)

    def draw(self, features: np.ndarray, size: int) -> np.ndarray:
        xs, ys, length = features.T
        half = self.sun_side / 2
        images = geometry.boxes(xs - half, xs + half, ys - half, ys + half, size)
        right_edge, left_edge = self.pole_x + self.pole_half_width, self.pole_x - self.pole_half_width
        start = np.where(length >= 0, right_edge, left_edge - np.abs(length))
        n = len(features)
        images += geometry.boxes(
            start, start + np.abs(length), np.full(n, self.strip[0]), np.full(n, self.strip[1]), size
        )
        images += geometry.fixed_box(left_edge, right_edge, self.ground, self.ground + self.pole_height, size)
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
        sun, x_offset, y_offset = estimators.region(upright, (0.0, 1.0), (self.sun_region_bottom, 1.0))
        xs, ys, _ = estimators.square(sun, x_offset, y_offset)
        thickness_px = (self.strip[1] - self.strip[0]) * size
        left, _, _ = estimators.region(upright, (0.0, self.pole_x), (0.0, self.strip_region_top))
        right, _, _ = estimators.region(upright, (self.pole_x, 1.0), (0.0, self.strip_region_top))
        left_area, right_area = estimators.area_px(left), estimators.area_px(right)
        # ±1 by arithmetic on the comparison, which numpy and torch share; it is piecewise
        # constant, so the length's gradient flows through the areas alone.
        direction = 2.0 * (right_area >= left_area) - 1.0
        length = direction * (left_area + right_area) / thickness_px / size
        return column_stack([xs / size, ys / size, length])

    def residual(self, features: np.ndarray) -> np.ndarray:
        xs, ys, length = features.T
        return abs(length) - self.rule(xs, ys)

    def coarse_ok(self, features: np.ndarray) -> np.ndarray:
        xs, _, length = features.T
        return (length * (self.pole_x - xs) > 0) | (np.abs(xs - self.pole_x) < self.coarse_margin)

    def violation_candidates(self, features: np.ndarray, delta: float) -> np.ndarray:
        xs, ys, length = features.T
        direction = np.where(length != 0, np.sign(length), self.away_from_sun(xs))
        target = self.rule(xs, ys)
        candidates = []
        for magnitude in (target + delta, target - delta):
            moved = features.copy()
            # A negative magnitude would flip the shadow, not shorten it: mark it infeasible.
            moved[:, 2] = np.where(magnitude >= 0, direction * magnitude, np.nan)
            candidates.append(moved)
        return np.stack(candidates)

    def coarse_violations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        xs = self.pole_x + side * rng.uniform(0.08, self.xs_range[1] - self.pole_x, size=n)
        ys = rng.uniform(*self.ys_range, size=n)
        return np.stack([xs, ys, -self.away_from_sun(xs) * self.rule(xs, ys)], axis=1)

    def in_frame(self, features: np.ndarray) -> np.ndarray:
        xs, ys, length = features.T
        half = self.sun_side / 2
        with np.errstate(invalid="ignore"):
            return (
                (xs - half >= 0.01)
                & (xs + half <= 0.99)
                & (ys - half >= self.sun_region_bottom + 0.05)
                & (ys + half <= 0.99)
                & (np.abs(length) <= self.max_length)
            )


@hookimpl
def rulekit_tasks() -> list[Task]:
    return [Shadow()]
