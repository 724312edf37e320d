"""Pictures a person would rather look at than read: grids of sample images."""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image

from rulekit.storage import write_bytes_atomic


def grid_image(images: np.ndarray, columns: int = 8, gap: int = 1, min_width: int = 512) -> np.ndarray:
    """Tile images (n, h, w) with values in [0, 1] or uint8 into one uint8 picture.

    Tiles sit on a mid-grey background so that black and white borders of the images stay
    visible; the picture is scaled up by an integer factor to at least ``min_width`` pixels.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    count, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap), 128, dtype=np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        canvas[top : top + height, left : left + width] = images[index]
    scale = max(1, math.ceil(min_width / canvas.shape[1]))
    return np.kron(canvas, np.ones((scale, scale), dtype=np.uint8))


def save_grid(images: np.ndarray, path: str | os.PathLike, columns: int = 8) -> None:
    """Write a PNG grid of ``images`` to ``path``, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(grid_image(images, columns)).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def _figure_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def histogram_bins(residuals: list[np.ndarray], bins: int = 41) -> np.ndarray:
    """Common, symmetric bin edges that hold the central 99 % of every residual set."""
    finite = [values[np.isfinite(values)] for values in residuals if np.isfinite(values).any()]
    reach = max([float(np.quantile(np.abs(values), 0.99)) for values in finite] + [1e-4])
    return np.linspace(-reach, reach, bins + 1)


def save_rule_figure(
    path: str | os.PathLike,
    title: str,
    driver_name: str,
    data: tuple[np.ndarray, np.ndarray],
    samples: tuple[np.ndarray, np.ndarray],
    edges: np.ndarray,
) -> None:
    """The central picture: residual against the driving feature, data beside samples, and
    the two residual histograms. Rule-abiding images sit on the line residual = 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scatter, histogram) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    scatter.scatter(data[0], data[1], s=4, c="0.55", alpha=0.5, label="training data (measured)")
    scatter.scatter(samples[0], samples[1], s=6, c="tab:red", alpha=0.6, label="generated samples")
    scatter.axhline(0.0, color="black", linewidth=1, label="the fine rule")
    scatter.set_xlabel(f"{driver_name} (fraction of image side)")
    scatter.set_ylabel("residual (fraction of image side)")
    scatter.set_title(title)
    scatter.legend(loc="upper right", fontsize=8, markerscale=3)
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    for values, colour, label in ((data[1], "0.55", "data"), (samples[1], "tab:red", "samples")):
        counts, _ = np.histogram(np.clip(values[np.isfinite(values)], edges[0], edges[-1]), bins=edges)
        histogram.bar(centres, counts / max(counts.sum(), 1), width=width, color=colour, alpha=0.6, label=label)
    histogram.set_xlabel("residual")
    histogram.set_ylabel("fraction")
    histogram.legend(fontsize=8)
    write_bytes_atomic(path, _figure_bytes(figure))


def save_probe_figure(path: str | os.PathLike, title: str, rows: list[dict]) -> None:
    """Held-out AUC against δ: a colour per probe input and noise level, a line style per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.2))
    lines: dict[tuple, list[tuple[float, float]]] = {}
    for row in rows:
        level = row.get("level")
        key = (row["input"], None if level in (None, "") else float(level), row["estimator"])
        lines.setdefault(key, []).append((float(row["delta"]), float(row["auc"])))
    views = sorted({(name, level) for name, level, _ in lines}, key=lambda view: (view[0], view[1] or 0.0))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(views), 2)))
    styles = {estimator: style for estimator, style in zip(sorted({key[2] for key in lines}), ("-", "--", ":", "-."))}
    for (name, level, estimator), points in sorted(lines.items(), key=lambda item: (item[0][0], item[0][1] or 0.0, item[0][2])):
        points.sort()
        label = f"{name}" + ("" if level is None else f" @ level {level:g}") + f", {estimator}"
        axis.plot(
            [d for d, _ in points], [a for _, a in points], styles[estimator], color=colours[views.index((name, level))],
            marker="o", markersize=3, linewidth=1.2, label=label,
        )
    _finish_auc_figure(figure, axis, title, path)


def _finish_auc_figure(figure, axis, title: str, path: str | os.PathLike) -> None:
    """Label an AUC-against-δ axis (chance line, symlog δ, legend beside it) and write the figure."""
    axis.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
    axis.set_xscale("symlog", linthresh=0.005)
    axis.set_xlabel("violation δ (fraction of image side)")
    axis.set_ylabel("held-out ROC AUC")
    axis.set_ylim(0.4, 1.02)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    write_bytes_atomic(path, _figure_bytes(figure))


def save_loss_figure(path: str | os.PathLike, curves: list) -> None:
    """Training loss against step for every ``plots/loss/*.csv`` curve."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    for curve in curves:
        with open(curve, newline="") as handle:
            rows = list(csv.DictReader(handle))
        axis.plot([int(row["step"]) for row in rows], [float(row["loss"]) for row in rows], linewidth=1, label=curve.stem)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.legend(fontsize=7)
    write_bytes_atomic(path, _figure_bytes(figure))


def save_classifier_figure(path: str | os.PathLike, title: str, rows: list[dict]) -> None:
    """The rule classifier's held-out AUC against δ, a line per noise level; the AUC on the
    model's own rejected samples (which have no single δ) is a dashed line in its level's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.2))
    levels = sorted({float(row["level"]) for row in rows})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(len(levels), 2)))
    for level, colour in zip(levels, colours):
        at_level = [row for row in rows if float(row["level"]) == level]
        points = sorted((float(row["delta"]), float(row["auc"])) for row in at_level if row["source"] == "synthetic")
        if points:
            axis.plot(
                [d for d, _ in points], [a for _, a in points], "-", color=colour, marker="o", markersize=3,
                label=f"synthetic δ @ level {level:g}",
            )
        for row in at_level:
            if row["source"] == "own-samples":
                axis.axhline(
                    float(row["auc"]), color=colour, linestyle="--", linewidth=1, label=f"own rejected samples @ level {level:g}"
                )
    _finish_auc_figure(figure, axis, title, path)
