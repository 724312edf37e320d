"""``mirror``: a square and its reflection in a vertical mirror at x = 0.5."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from rulekit.hookspecs import hookimpl
from rulekit.tasks import geometry
from rulekit.tasks.base import Task, column_stack, signed_largest

if TYPE_CHECKING:
    import torch


class Mirror(Task):
    """A square object (x, y, s) left of a vertical mirror line at x = 0.5 and its reflection
    (xr, yr, sr) on the right; (x, y) is the centre and s the side.

    - fine rule: xr = 1 − x, yr = y, sr = s; the residual is the deviation of largest magnitude
      among the three, with its sign;
    - coarse rule: the reflection is on the other side of the mirror, at roughly the same height
      (|yr − y| ≤ 0.1);
    - a violation moves one of xr, yr or sr.

    Prior: x ~ U[0.12, 0.32], y ~ U[0.15, 0.85], s ~ U[0.1, 0.18]. The mirror spans x in
    [0.49, 0.51]; each square is read in its own half with the running-sum edge estimator.
    """

    name = "mirror"
    description = "A square and its reflection in a mirror at x = 0.5: xr = 1 − x, yr = y, sr = s."
    feature_names = ("x", "y", "s", "xr", "yr", "sr")
    max_violation = 0.15

    mirror = (0.49, 0.51)
    x_range = (0.12, 0.32)
    y_range = (0.15, 0.85)
    s_range = (0.1, 0.18)
    left_region = (0.0, 0.45)
    right_region = (0.55, 1.0)
    side_limits = (0.07, 0.3)
    coarse_height_tolerance = 0.1

    def constants(self) -> dict[str, float]:
        return {"mirror_x": 0.5, "coarse_height_tolerance": self.coarse_height_tolerance}

    def sample_features(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.uniform(*self.x_range, size=n)
        y = rng.uniform(*self.y_range, size=n)
        s = rng.uniform(*self.s_range, size=n)
        return np.stack([x, y, s, 1.0 - x, y, s], axis=1)

    def draw(self, features: np.ndarray, size: int) -> np.ndarray:
        x, y, s, xr, yr, sr = features.T
        images = geometry.boxes(x - s / 2, x + s / 2, y - s / 2, y + s / 2, size)
        images += geometry.boxes(xr - sr / 2, xr + sr / 2, yr - sr / 2, yr + sr / 2, size)
        images += geometry.fixed_box(*self.mirror, 0.0, 1.0, size)
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
        for x_range in (self.left_region, self.right_region):
            pixels, x_offset, y_offset = estimators.region(upright, x_range, (0.0, 1.0))
            columns.extend(estimators.square(pixels, x_offset, y_offset))
        return column_stack(columns) / size

    def deviations(self, features: np.ndarray) -> np.ndarray:
        """(n, 3) deviations of the reflection's x, y and side from the mirror image."""
        x, y, s, xr, yr, sr = features.T
        return column_stack([xr - (1.0 - x), yr - y, sr - s])

    def residual(self, features: np.ndarray) -> np.ndarray:
        return signed_largest(self.deviations(features))

    def coarse_ok(self, features: np.ndarray) -> np.ndarray:
        _, y, _, xr, yr, _ = features.T
        return (xr > 0.5) & (np.abs(yr - y) <= self.coarse_height_tolerance)

    def violation_candidates(self, features: np.ndarray, delta: float) -> np.ndarray:
        mirrored = features.copy()
        mirrored[:, 3:] = np.stack([1.0 - features[:, 0], features[:, 1], features[:, 2]], axis=1)
        candidates = []
        for column in (3, 4, 5):
            for sign in (1.0, -1.0):
                moved = mirrored.copy()
                moved[:, column] += sign * delta
                candidates.append(moved)
        return np.stack(candidates)

    def coarse_violations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        features = self.sample_features(rng, n)
        shift = rng.uniform(0.2, 0.35, size=n)
        features[:, 4] = np.where(features[:, 1] < 0.5, features[:, 1] + shift, features[:, 1] - shift)
        return features

    def in_frame(self, features: np.ndarray) -> np.ndarray:
        x, y, s, xr, yr, sr = features.T
        with np.errstate(invalid="ignore"):
            sides_ok = (s >= self.side_limits[0]) & (s <= self.side_limits[1])
            sides_ok &= (sr >= self.side_limits[0]) & (sr <= self.side_limits[1])
            left_ok = (x - s / 2 >= 0.01) & (x + s / 2 <= self.left_region[1] - 0.04)
            right_ok = (xr - sr / 2 >= self.right_region[0] + 0.04) & (xr + sr / 2 <= 0.99)
            heights_ok = (y - s / 2 >= 0.01) & (y + s / 2 <= 0.99) & (yr - sr / 2 >= 0.01) & (yr + sr / 2 <= 0.99)
        return sides_ok & left_ok & right_ok & heights_ok


@hookimpl
def rulekit_tasks() -> list[Task]:
    return [Mirror()]
