"""The same params and seeds give bit-identical data, weights, samples and metrics on the CPU.

The smoke pipeline (generate → train → sample → train-classifier → evaluate with and without
guidance → probe) runs twice, in two folders, in this process. Between the runs the global torch
and numpy generators are seeded differently, so a stage that draws from them instead of from its
own seeded generator makes the two runs differ.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rulekit import cli
from rulekit.registry import reset_registry

from conftest import write_params

TASK, MODEL = "bars", "ddpm-unet"
GUIDANCE = ["none", "classifier"]
STAGES = (
    ("generate", TASK),
    ("train", TASK),
    ("sample", TASK),
    ("train-classifier", TASK),
    ("evaluate", TASK),
    ("probe", TASK),
)
#: Files whose bytes depend only on params and seeds (their neighbours' meta.json and
#: rulekit.json also hold timings, so they are left out).
ARTIFACTS = (
    f"data/{TASK}/data.safetensors",
    f"models/{TASK}/{MODEL}/diffusion_pytorch_model.safetensors",
    f"samples/{TASK}/{MODEL}/none/data.safetensors",
    f"classifiers/{TASK}/{MODEL}/classifier.safetensors",
    *(f"evaluation/{TASK}/{MODEL}/{guidance}/data.safetensors" for guidance in GUIDANCE),
)
EXPECTED_METRICS = {
    f"metrics/{TASK}/{MODEL}/classifier.json",
    f"metrics/{TASK}/{MODEL}/probes.json",
    *(f"metrics/{TASK}/{MODEL}/guidance/{guidance}.json" for guidance in GUIDANCE),
}


def run_pipeline(folder: Path, global_seed: int) -> None:
    """Run every stage in ``folder`` after seeding the global generators with ``global_seed``."""
    write_params(
        folder / "params.yaml",
        guidance=GUIDANCE,
        guidance_settings={"classifier": {"scale": 1.0}},
        probe={
            "seed": 0, "inputs": ["pixels", "noised-pixels", "unet-mid", "rule-classifier"],
            "estimators": ["logistic", "mlp"], "deltas": [0.0, 0.05], "levels": [0.0, 0.5],
            "n_per_class": 40, "test_fraction": 0.3,
        },
    )
    torch.manual_seed(global_seed)
    np.random.seed(global_seed)
    previous = Path.cwd()
    os.chdir(folder)
    try:
        for args in STAGES:
            reset_registry()
            errors = io.StringIO()
            try:
                with contextlib.redirect_stderr(errors):
                    cli.main(list(args))
            except SystemExit as done:
                assert done.code in (0, None), f"rulekit {' '.join(args)} failed: {errors.getvalue()}"
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    run_pipeline(first, global_seed=1)
    run_pipeline(second, global_seed=2)
    return first, second


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_arrays_and_weights_are_bit_identical(two_runs, artifact):
    first, second = two_runs
    assert (first / artifact).read_bytes() == (second / artifact).read_bytes(), artifact


def test_every_metrics_file_is_bit_identical(two_runs):
    first, second = two_runs
    written = {str(path.relative_to(first)) for path in (first / "metrics").rglob("*.json")}
    assert written == {str(path.relative_to(second)) for path in (second / "metrics").rglob("*.json")}
    assert EXPECTED_METRICS <= written
    different = [name for name in sorted(written) if (first / name).read_bytes() != (second / name).read_bytes()]
    assert not different, f"metrics differ between identical runs: {different}"


def test_guided_and_unguided_samples_differ(two_runs):
    first, _ = two_runs
    unguided, guided = (first / f"evaluation/{TASK}/{MODEL}/{guidance}/data.safetensors" for guidance in GUIDANCE)
    # Otherwise the guided artifacts above would be compared without guidance having acted.
    assert unguided.read_bytes() != guided.read_bytes()
