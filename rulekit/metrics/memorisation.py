"""Memorisation: whether generated samples are copies of training images rather than new ones.

Distances are root-mean-square pixel differences, with images taken as value / 255, so 0 is a
pixel-exact copy and 1 is black against white everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from rulekit.hookspecs import hookimpl
from rulekit.metrics.base import Metric, MetricInput, undefined

#: How many training images measure the training data's own nearest-neighbour scale.
DATA_QUERIES = 512
#: A sample closer to a training image than this fraction of the training data's own scale counts
#: as memorised; see ``Memorisation``.
MEMORISED_FRACTION_OF_DATA_SCALE = 0.5
#: Floats held at once by one block of the distance computation (32 MiB in float64).
BLOCK_ELEMENTS = 1 << 22


def nearest_distances(
    queries: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None, block_elements: int = BLOCK_ELEMENTS
) -> tuple[np.ndarray, np.ndarray]:
    """RMS pixel distances (images as value / 255) from each uint8 query image to its nearest
    reference image, and to its nearest reference image that is not a pixel-exact copy of it.

    Query i never matches reference ``exclude[i]`` (itself). NaN where nothing is left to match.
    Squared distances come from ‖a‖² + ‖b‖² − 2 a·b, in blocks of about ``block_elements``
    floats per array, so memory stays small for any number of images.
    """
    queries = queries.reshape(len(queries), -1)
    reference = reference.reshape(len(reference), -1)
    pixels = max(queries.shape[1], 1)
    block = max(1, min(block_elements // pixels, math.isqrt(block_elements)))
    nearest = np.full(len(queries), np.inf)
    nearest_distinct = np.full(len(queries), np.inf)
    for q_start in range(0, len(queries), block):
        q_stop = min(q_start + block, len(queries))
        # uint8 levels held as float64 keep every product and sum an exact integer (below 2^53 for
        # any supported image size), so a copy lands at exactly 0 and nothing else does.
        query = queries[q_start:q_stop].astype(np.float64)
        query_norm = np.einsum("ij,ij->i", query, query)
        for r_start in range(0, len(reference), block):
            candidate = reference[r_start : r_start + block].astype(np.float64)
            candidate_norm = np.einsum("ij,ij->i", candidate, candidate)
            squared = query_norm[:, None] + candidate_norm[None, :] - 2.0 * (query @ candidate.T)
            if exclude is not None:
                own = exclude[q_start:q_stop, None] == np.arange(r_start, r_start + len(candidate))[None, :]
                squared[own] = np.inf
            nearest[q_start:q_stop] = np.minimum(nearest[q_start:q_stop], squared.min(axis=1))
            distinct = np.where(squared > 0.0, squared, np.inf).min(axis=1)
            nearest_distinct[q_start:q_stop] = np.minimum(nearest_distinct[q_start:q_stop], distinct)
    return _rms(nearest, pixels), _rms(nearest_distinct, pixels)


def _rms(squared_levels: np.ndarray, pixels: int) -> np.ndarray:
    distance = np.sqrt(squared_levels / pixels) / 255.0
    return np.where(np.isfinite(distance), distance, np.nan)


def sample_distances(data: MetricInput) -> np.ndarray:
    """Each generated sample's distance to its nearest training image, computed once."""
    return data.cached("memorisation.sample_nn", lambda: nearest_distances(data.images, data.reference_images)[0])


def data_distances(data: MetricInput) -> tuple[np.ndarray, np.ndarray]:
    """For up to ``DATA_QUERIES`` training images spread evenly through the set: the distance to
    the nearest other training image, and to the nearest one that differs from it; computed once."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        m = len(data.reference_images)
        chosen = np.unique(np.linspace(0, m - 1, min(DATA_QUERIES, m)).astype(np.intp))
        return nearest_distances(data.reference_images[chosen], data.reference_images, exclude=chosen)

    return data.cached("memorisation.data_nn", compute)


def data_scale(data: MetricInput) -> tuple[float, float, float]:
    """The training data's median distance to the nearest distinct training image, the memorisation
    threshold drawn from it, and the fraction of training images closer than that threshold to
    another training image (NaN where the training data gives no scale)."""
    nearest, nearest_distinct = data_distances(data)
    known = ~np.isnan(nearest_distinct)
    if not known.any():
        return math.nan, math.nan, math.nan
    median = float(np.median(nearest_distinct[known]))
    threshold = MEMORISED_FRACTION_OF_DATA_SCALE * median
    return median, threshold, float(np.mean(nearest[known] < threshold))


class Memorisation(Metric):
    """Nearest-training-image distances of generated samples beside the training data's own.

    The yardstick is the training data's own spacing: the median distance from a training image
    to its nearest other, distinct training image is how close a fresh draw from the data
    distribution typically comes to the training set. A sample at less than half that distance is
    closer to a training image than most training images are to any different one; a model that
    copies lands at about 0, far below the threshold, while fresh draws fall under it only in the
    lower tail of the data's own distances. Pixel-exact duplicates within the training set
    (frequent when a task with few features is stored small) are left out of the scale, which
    would otherwise be 0 and call nothing memorised.

    The tail under the threshold is not empty, least of all for tasks with few features, so
    ``data_memorised_fraction`` reports the fraction of the training images themselves that lie
    under it (duplicates included): the level that a model drawing genuinely new images reaches
    by chance, against which ``memorised_fraction`` is read.
    """

    name = "memorisation"
    description = "Distance from each sample to its nearest training image, and the fraction that are near-copies."

    keys = ("nn_distance_median", "data_nn_distance_median", "memorised_fraction", "data_memorised_fraction")

    def compute(self, data: MetricInput, index: np.ndarray) -> dict[str, float]:
        data_median, threshold, data_fraction = data.cached("memorisation.data_scale", lambda: data_scale(data))
        result = undefined(self.keys)
        result.update(data_nn_distance_median=data_median, data_memorised_fraction=data_fraction)
        distance = sample_distances(data)[index]
        distance = distance[~np.isnan(distance)]
        if distance.size:
            result["nn_distance_median"] = float(np.median(distance))
            if not math.isnan(threshold):
                result["memorised_fraction"] = float(np.mean(distance < threshold))
        return result


@hookimpl
def rulekit_metrics() -> list[Metric]:
    return [Memorisation()]
