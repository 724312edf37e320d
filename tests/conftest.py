"""Shared fixtures: an isolated registry per test and an in-process CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rulekit import cli
from rulekit.registry import get_registry, reset_registry

REPO = Path(__file__).resolve().parent.parent
BUILTIN_TASKS = ("bars", "shadow", "mirror", "perspective")


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Every test loads plugins anew, so environment changes take effect and nothing leaks."""
    monkeypatch.delenv("RULEKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("RULEKIT_QUIET", "1")
    reset_registry()
    yield
    reset_registry()


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``rulekit ARGS`` in this process and return its exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        reset_registry()
        try:
            cli.main(list(args))
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        else:
            code = 0
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_console_script(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``rulekit`` console script as a user would."""
    full_env = {**os.environ, "RULEKIT_QUIET": "1", **(env or {})}
    executable = Path(sys.executable).with_name("rulekit")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "rulekit.cli"]
    return subprocess.run([*command, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)


SMOKE_PARAMS = {
    "tasks": ["bars"],
    "models": ["ddpm-unet"],
    "generate": {"seed": 0, "size": 16, "n_images": 64, "grid_images": 16},
    "network": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "attention": False},
    "train": {
        "seed": 0, "steps": 12, "batch_size": 16, "learning_rate": 0.002, "lr_schedule": "cosine",
        "warmup_steps": 2, "weight_decay": 0.0, "grad_clip": 1.0, "ema_decay": 0.99,
        "gradient_accumulation_steps": 1, "mixed_precision": "fp32", "checkpoint_every": 5,
        "keep_checkpoints": 2, "log_every": 2,
    },
    "model_settings": {
        "ddpm-unet": {"prediction_type": "epsilon", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
        "flow-unet": {"time_sampling": "logit_normal"},
    },
    "sampler_settings": {
        "ddpm-unet": {"scheduler": "ddim", "steps": 5, "clip_sample": True},
        "flow-unet": {"solver": "heun", "steps": 5},
    },
    "sample": {"seed": 0, "n_samples": 8, "batch_size": 8, "grid_images": 8},
    "guidance": ["none"],
    "guidance_settings": {},
    "classifier": {
        "seed": 0, "reject_threshold": 0.01, "synthetic_fraction": 1.0, "synthetic_deltas": [0.01, 0.05],
        "channels": [8, 16], "hidden": 16, "steps": 10, "batch_size": 16, "learning_rate": 0.002,
        "max_level": 0.5, "holdout_fraction": 0.25, "eval_deltas": [0.05], "eval_levels": [0.0],
        "n_eval_per_class": 16,
    },
    "evaluate": {
        "sampling_seed": 1, "n_samples": 8, "batch_size": 8, "grid_images": 8,
        "seed": 0, "n_resamples": 50, "confidence": 0.95,
    },
    "probe": {
        "seed": 0, "inputs": ["pixels", "noised-pixels", "unet-mid"], "estimators": ["logistic"],
        "deltas": [0.0, 0.05], "levels": [0.0, 0.5], "n_per_class": 40, "test_fraction": 0.3,
    },
}


def smoke_params(tasks=("bars",), size: int = 16, n_images: int = 64, **overrides) -> dict:
    """The smoke configuration as a mapping; ``overrides`` replace whole sections or keys."""
    import copy

    params = copy.deepcopy(SMOKE_PARAMS)
    params["tasks"] = tasks if isinstance(tasks, str) else list(tasks)
    params["generate"].update(size=size, n_images=n_images)
    params.update(overrides)
    return params


def write_params(path: Path, tasks=("bars",), size: int = 16, n_images: int = 64, **overrides) -> Path:
    """Write a smoke params file; ``overrides`` replace whole sections or top-level keys."""
    import yaml

    path.write_text(yaml.safe_dump(smoke_params(tasks, size, n_images, **overrides), sort_keys=False))
    return path


def all_tasks():
    """Every task the registry offers, built-ins and installed plugins alike."""
    reset_registry()
    registry = get_registry()
    return [registry.task(name) for name in registry.names("task")]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
