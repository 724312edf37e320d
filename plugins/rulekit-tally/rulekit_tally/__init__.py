"""An example rulekit plugin: a counting rule, registered through the ``rulekit`` entry point."""

from __future__ import annotations

import numpy as np

from rulekit import hookimpl
from rulekit.tasks import Task
from rulekit.tasks import geometry


class Tally(Task):
    """k dots (squares of side 0.1) stacked in the left half and a bar of height h on the right.

    - fine rule: h = 0.14 · k + 0.06, k in {1, ..., 5} drawn uniformly;
    - coarse rule: the bar's height is nearest to the level of the right count;
    - a violation moves h by up to 0.06, less than half a level, so the count still reads right.

    The count is read as the left half's ink over one dot's area and the height as the right
    half's ink over the bar's width: both exact under area anti-aliasing.
    """

    name = "tally"
    description = "k dots and a bar; the bar's height is 0.14·k + 0.06 (a counting rule)."
    feature_names = ("count", "height")
    min_size = 8
    max_violation = 0.06

    step = 0.14
    offset = 0.06
    max_count = 5
    dot_side = 0.1
    dot_x = 0.2
    first_dot_y = 0.1
    dot_pitch = 0.17
    bar_x = 0.65
    bar_width = 0.2
    ground = 0.1

    def constants(self) -> dict[str, float]:
        return {"step": self.step, "offset": self.offset, "max_count": self.max_count}

    def level(self, count: np.ndarray) -> np.ndarray:
        """The bar height the fine rule gives for ``count`` dots (rounded to a whole count)."""
        return self.step * np.round(count) + self.offset

    def sample_features(self, rng: np.random.Generator, n: int) -> np.ndarray:
        count = rng.integers(1, self.max_count + 1, size=n).astype(np.float64)
        return np.stack([count, self.level(count)], axis=1)

    def draw(self, features: np.ndarray, size: int) -> np.ndarray:
        count, height = features.T
        n = len(features)
        images = geometry.boxes(
            np.full(n, self.bar_x), np.full(n, self.bar_x + self.bar_width), np.full(n, self.ground), self.ground + height, size
        )
        for slot in range(self.max_count):
            shown = (np.round(count) > slot).astype(np.float32)
            bottom = self.first_dot_y + slot * self.dot_pitch
            dot = geometry.fixed_box(self.dot_x, self.dot_x + self.dot_side, bottom, bottom + self.dot_side, size)
            images += shown[:, None, None] * dot
        return images

    def read(self, images: np.ndarray) -> np.ndarray:
        size = images.shape[-1]
        upright = geometry.upright(images)
        left, _, _ = geometry.region(upright, (0.0, 0.5), (0.0, 1.0))
        right, _, _ = geometry.region(upright, (0.5, 1.0), (0.0, 1.0))
        count = geometry.area_px(left) / (self.dot_side * size) ** 2
        height = geometry.area_px(right) / (self.bar_width * size) / size
        return np.stack([count, height], axis=1)

    def residual(self, features: np.ndarray) -> np.ndarray:
        return features[:, 1] - self.level(features[:, 0])

    def coarse_ok(self, features: np.ndarray) -> np.ndarray:
        shown = np.round((features[:, 1] - self.offset) / self.step)
        return shown == np.round(features[:, 0])

    def violation_candidates(self, features: np.ndarray, delta: float) -> np.ndarray:
        up, down = features.copy(), features.copy()
        up[:, 1] = self.level(features[:, 0]) + delta
        down[:, 1] = self.level(features[:, 0]) - delta
        return np.stack([up, down])

    def coarse_violations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        count = rng.integers(1, self.max_count + 1, size=n)
        wrong = (count - 1 + rng.integers(1, self.max_count, size=n)) % self.max_count + 1
        return np.stack([count.astype(np.float64), self.level(wrong.astype(np.float64))], axis=1)

    def in_frame(self, features: np.ndarray) -> np.ndarray:
        count, height = features.T
        with np.errstate(invalid="ignore"):
            return (count >= 0.5) & (count <= self.max_count + 0.5) & (height >= 0.02) & (height <= 0.85)


@hookimpl
def rulekit_tasks() -> list[Task]:
    return [Tally()]
