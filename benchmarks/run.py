"""Every speed measurement of rulekit in one run, side by side, with its ratio to its target.

    python benchmarks/run.py [--quick] [--json benchmarks/results.json] [--params params.yaml]

Sections, each printed as a table and kept in the JSON file:

- ``render_measure``: rendering and measuring images/s of every registered task (plugins
  included) at 32 × 32, against 20,000 and 50,000 images/s;
- ``train``: ``rulekit train`` images/s against a plain reference loop;
- ``sample``: unguided sampling images/s of each model family, with the same number of steps;
- ``guidance``: sampling time of each guidance strategy relative to ``none`` (target ≤ 2.5× for
  ``classifier`` and ``rule-gradient``);
- ``probe``: seconds for one set of probe fits (pixels and noised pixels, logistic and MLP);
- ``dvc_noop``: seconds of ``dvc repro`` when nothing changed. It runs only if ``dvc status``
  reports everything up to date, so it never does real work; otherwise the section says why it
  was skipped.

Network, batch and classifier sizes are those of ``--params`` (the quick profile); the sizes of
the measurements themselves are fixed here, so runs of different commits compare. ``--quick``
shrinks them to finish in about two minutes on two cores; the full run takes under ten. The JSON
file also records the rulekit, torch and git versions, CPU and thread counts and the time.
The exit code is non-zero only when a measurement fails, never because a target is missed.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# The other benchmark scripts sit beside this one, so their folder is on the import path.
import guidance
import render_measure
import rulekit
import train_sample
from rulekit.errors import RulekitError
from rulekit.params import parse_params
from rulekit.probes.base import ProbeContext
from rulekit.probes.run import probe_task
from rulekit.progress import QUIET_ENV_VAR, progress_enabled
from rulekit.registry import get_registry
from rulekit.storage import write_json_atomic

REPO = Path(__file__).resolve().parent.parent
TASK = "bars"
PROBE_INPUTS = ("pixels", "noised-pixels")
PROBE_ESTIMATORS = ("logistic", "mlp")
#: Seconds after which a dvc command counts as hung.
DVC_TIMEOUT_S = 600


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    render_n: int
    render_repeats: int
    train_images: int
    train_steps: int
    train_rounds: int
    sampler_steps: int
    sample_n: int
    guidance_n: int
    guidance_rounds: int
    probe_n_per_class: int
    probe_deltas: tuple[float, ...]
    probe_levels: tuple[float, ...]


FULL = Sizes(
    render_n=20_000,
    render_repeats=5,
    train_images=4096,
    train_steps=150,
    train_rounds=2,
    sampler_steps=50,
    sample_n=256,
    guidance_n=128,
    guidance_rounds=3,
    probe_n_per_class=400,
    probe_deltas=(0.0, 0.005, 0.01, 0.02, 0.04, 0.08),
    probe_levels=(0.0, 0.2, 0.5),
)
QUICK = Sizes(
    render_n=5_000,
    render_repeats=2,
    train_images=512,
    train_steps=30,
    train_rounds=2,
    sampler_steps=20,
    sample_n=64,
    guidance_n=32,
    guidance_rounds=2,
    probe_n_per_class=100,
    probe_deltas=(0.0, 0.02),
    probe_levels=(0.0, 0.5),
)


def benchmark_params(raw_params: dict, sizes: Sizes) -> dict:
    """``raw_params`` with the benchmark's data size and the same sampler steps for every family."""
    raw = copy.deepcopy(raw_params)
    raw["generate"]["n_images"] = sizes.train_images
    for settings in raw["sampler_settings"].values():
        settings["steps"] = sizes.sampler_steps
    return raw


def measure_render(raw_params: dict, sizes: Sizes) -> dict:
    tasks = render_measure.measure(32, sizes.render_n, sizes.render_repeats)
    return {
        "size": 32,
        "n": sizes.render_n,
        "repeats": sizes.render_repeats,
        "render_target_per_s": render_measure.RENDER_TARGET,
        "measure_target_per_s": render_measure.MEASURE_TARGET,
        "tasks": tasks,
    }


def render_table(result: dict) -> Table:
    return render_measure.table(result["tasks"], result["size"], result["n"], result["repeats"])


def measure_train(raw_params: dict, sizes: Sizes) -> dict:
    with train_sample.prepared_data(raw_params, TASK) as root:
        return train_sample.measure_training(root, TASK, raw_params, sizes.train_steps, sizes.train_rounds)


def measure_sample(raw_params: dict, sizes: Sizes) -> dict:
    with train_sample.prepared_data(raw_params, TASK) as root:
        return train_sample.measure_sampling(root, TASK, raw_params, sizes.sample_n)


def measure_guidance(raw_params: dict, sizes: Sizes) -> dict:
    model = "ddpm-unet"
    rows = guidance.measure(sizes.guidance_n, sizes.guidance_rounds, model, TASK, parse_params(raw_params))
    return {
        "model": model,
        "task": TASK,
        "steps": sizes.sampler_steps,
        "samples": sizes.guidance_n,
        "rounds": sizes.guidance_rounds,
        "target_ratio": guidance.OVERHEAD_TARGET,
        "cases": rows,
    }


def guidance_table(result: dict) -> Table:
    return guidance.table(result["cases"], result["model"], result["samples"], result["rounds"], result["steps"])


def measure_probe(raw_params: dict, sizes: Sizes) -> dict:
    """Seconds of one ``probe_task`` call; the network is untrained, since noised pixels use only
    its noise schedule."""
    params = parse_params(raw_params)
    registry = get_registry()
    model = "ddpm-unet"
    family = registry.get("model", model)
    size = params.generate.size
    torch.manual_seed(0)
    context = ProbeContext(
        task=registry.task(TASK),
        size=size,
        seed=0,
        process=family.process(params.train_settings_for(model), params.sampler_settings_for(model)),
        network=family.build_network(params.network, size),
    )
    inputs = [registry.get("probe-input", name) for name in PROBE_INPUTS]
    started = time.perf_counter()
    rows = probe_task(
        context, inputs, list(sizes.probe_deltas), list(sizes.probe_levels), sizes.probe_n_per_class, list(PROBE_ESTIMATORS)
    )
    seconds = time.perf_counter() - started
    return {
        "task": TASK,
        "size": size,
        "inputs": list(PROBE_INPUTS),
        "estimators": list(PROBE_ESTIMATORS),
        "deltas": list(sizes.probe_deltas),
        "levels": list(sizes.probe_levels),
        "n_per_class": sizes.probe_n_per_class,
        "fits": len(rows),
        "seconds": seconds,
        "fits_per_s": len(rows) / seconds,
    }


def probe_table(result: dict) -> Table:
    table = Table(
        title=f"probe fits ({result['task']}, {result['size']} px, {2 * result['n_per_class']} images per δ, "
        f"{len(result['deltas'])} δ × {len(result['levels'])} levels)"
    )
    for column in ("inputs", "estimators", "fits", "seconds", "fits/s"):
        table.add_column(column, justify="right")
    table.add_row(
        ", ".join(result["inputs"]),
        ", ".join(result["estimators"]),
        str(result["fits"]),
        f"{result['seconds']:.2f}",
        f"{result['fits_per_s']:.2f}",
    )
    return table


def _dvc(executable: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [executable, *args], cwd=REPO, capture_output=True, text=True, timeout=DVC_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    return done, time.perf_counter() - started


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def measure_dvc_noop(raw_params: dict, sizes: Sizes) -> dict:
    """Seconds of ``dvc repro`` in the repository when ``dvc status`` says nothing changed."""
    result = {"status_seconds": None, "up_to_date": None, "repro_seconds": None, "note": None}
    executable = shutil.which("dvc")
    if executable is None:
        return {**result, "note": "skipped: dvc is not installed"}
    if not (REPO / "dvc.yaml").exists():
        return {**result, "note": f"skipped: {REPO} has no dvc.yaml"}
    status, result["status_seconds"] = _dvc(executable, "status", "--json")
    if status.returncode != 0:
        return {**result, "note": f"skipped: dvc status failed: {_last_line(status.stderr)}"}
    try:
        changed = json.loads(status.stdout)
    except json.JSONDecodeError:
        return {**result, "note": f"skipped: dvc status printed no JSON: {_last_line(status.stdout)}"}
    result["up_to_date"] = not changed
    if changed:
        names = sorted(changed)
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        note = f"skipped: dvc status reports changes in {len(names)} stage(s) ({shown}); dvc repro would do real work"
        return {**result, "note": note}
    repro, seconds = _dvc(executable, "repro")
    if repro.returncode != 0:
        message = _last_line(repro.stderr or repro.stdout)
        if "lock" in message.lower():
            return {**result, "note": f"skipped: another dvc process holds the lock ({message})"}
        raise RuntimeError(f"dvc repro failed although dvc status reported nothing changed: {message}")
    return {**result, "repro_seconds": seconds, "note": _last_line(repro.stdout)}


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def dvc_table(result: dict) -> Table:
    table = Table(title="dvc repro when nothing changed (repository root)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("dvc status", _seconds(result["status_seconds"]))
    table.add_row("dvc repro", _seconds(result["repro_seconds"]))
    if result["note"]:
        table.add_row("note", result["note"])
    return table


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    measure: Callable[[dict, Sizes], dict]
    table: Callable[[dict], Table]


SECTIONS = (
    Section("render_measure", "render and measure", measure_render, render_table),
    Section("train", "training", measure_train, train_sample.training_table),
    Section("sample", "sampling", measure_sample, train_sample.sampling_table),
    Section("guidance", "guidance overhead", measure_guidance, guidance_table),
    Section("probe", "probe fits", measure_probe, probe_table),
    Section("dvc_noop", "dvc repro no-op", measure_dvc_noop, dvc_table),
)


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def environment() -> dict:
    """What the numbers depend on besides the code: versions, commit, CPUs, threads, time."""
    return {
        "rulekit_version": rulekit.__version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about two minutes on two cores")
    parser.add_argument("--json", dest="json_path", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="network, batch and classifier sizes")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    console = Console()
    try:
        raw_params = yaml.safe_load(args.params.read_text())
        parse_params(raw_params, str(args.params))
    except (OSError, yaml.YAMLError, RulekitError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    raw_params = benchmark_params(raw_params, sizes)
    show_progress = progress_enabled()
    # One bar over the sections; the bars of the loops being timed would interleave with it.
    os.environ[QUIET_ENV_VAR] = "1"
    report = {**environment(), "quick": args.quick, "params": str(args.params), "sizes": asdict(sizes), "errors": {}}
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not show_progress,
    )
    with progress:
        bar = progress.add_task("benchmarks", total=len(SECTIONS))
        for section in SECTIONS:
            progress.update(bar, description=section.title)
            try:
                result = section.measure(raw_params, sizes)
            except Exception as error:  # noqa: BLE001 - one failed measurement must not hide the others
                report["errors"][section.key] = f"{type(error).__name__}: {error}"
                print(f"{section.title} failed:\n{traceback.format_exc()}", file=sys.stderr)
            else:
                report[section.key] = result
                console.print(section.table(result))
            progress.advance(bar)
    write_json_atomic(args.json_path, report)
    console.print(f"results written to {args.json_path}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
