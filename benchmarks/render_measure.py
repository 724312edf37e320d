"""Rendering and measuring throughput of every task, in images per second.

    python benchmarks/render_measure.py [--size 32] [--n 20000] [--repeats 5]

Each task renders and measures the same batch several times; the best time of the repeats is
reported, since a shared machine only ever adds time. Targets: rendering at least 20,000 and
measuring at least 50,000 images/s per task at 32 × 32.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from rulekit.registry import get_registry
from rulekit.storage import write_json_atomic

RENDER_TARGET = 20_000
MEASURE_TARGET = 50_000


def best_seconds(function, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def measure_task(task, size: int, n: int, repeats: int) -> dict[str, float]:
    features = task.sample(np.random.default_rng(0), n)
    images = task.render(features, size)
    stored = np.round(images * 255).astype(np.uint8)
    render_s = best_seconds(lambda: task.render(features, size), repeats)
    measure_s = best_seconds(lambda: task.measure(images), repeats)
    measure_u8_s = best_seconds(lambda: task.measure(stored), repeats)
    return {
        "render_per_s": n / render_s,
        "measure_per_s": n / measure_s,
        "measure_uint8_per_s": n / measure_u8_s,
    }


def measure(size: int, n: int, repeats: int) -> dict[str, dict[str, float]]:
    """Images per second of rendering and measuring, per registered task (plugins included),
    with each rate's ratio to its target."""
    registry = get_registry()
    results = {}
    for name in registry.names("task"):
        row = measure_task(registry.task(name), size, n, repeats)
        row["render_to_target"] = row["render_per_s"] / RENDER_TARGET
        row["measure_to_target"] = row["measure_per_s"] / MEASURE_TARGET
        results[name] = row
    return results


def table(results: dict[str, dict[str, float]], size: int, n: int, repeats: int) -> Table:
    """The rows of ``measure`` as a rich table."""
    table = Table(title=f"render and measure at {size}×{size}, {n} images, best of {repeats}")
    for column in ("task", "render img/s", "× target", "measure img/s", "× target", "measure uint8 img/s"):
        table.add_column(column, justify="right")
    for name, row in results.items():
        table.add_row(
            name,
            f"{row['render_per_s']:,.0f}",
            f"{row['render_to_target']:.1f}",
            f"{row['measure_per_s']:,.0f}",
            f"{row['measure_to_target']:.1f}",
            f"{row['measure_uint8_per_s']:,.0f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", dest="json_path", help="also write the results to this JSON file")
    args = parser.parse_args()

    results = measure(args.size, args.n, args.repeats)
    Console().print(table(results, args.size, args.n, args.repeats))
    if args.json_path:
        write_json_atomic(args.json_path, {"size": args.size, "n": args.n, "tasks": results})


if __name__ == "__main__":
    main()
