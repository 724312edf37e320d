"""Training: exact resume, refusing damaged checkpoints, multi-process, and the CLI stages."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rulekit.checkpoints import checkpoint_folders, join_state, split_state
from rulekit.errors import DataFileError
from rulekit.params import parse_params
from rulekit.stages.generate import generate
from rulekit.training import TrainingPaths, batch_indices, train_model

from conftest import REPO, run_console_script, smoke_params, write_params

WEIGHTS = "diffusion_pytorch_model.safetensors"


class Interrupted(Exception):
    pass


def paths_in(root: Path, task: str = "bars", model: str = "ddpm-unet") -> TrainingPaths:
    return TrainingPaths(
        data=root / "data" / task,
        model=root / "models" / task / model,
        checkpoints=root / "checkpoints" / task / model,
        loss_curve=root / "plots" / f"{task}-{model}.csv",
    )


@pytest.fixture
def smoke(tmp_path):
    """Smoke params and a generated bars dataset under tmp_path/data/bars."""
    params = parse_params(smoke_params())
    generate("bars", params, tmp_path / "data" / "bars")
    return params


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / WEIGHTS)


def test_state_split_and_join_round_trip():
    state = {"step": 3, "betas": (0.9, 0.999), 7: {"exp_avg": torch.arange(4.0)}, "none": None, "list": [torch.ones(2), "a"]}
    skeleton, tensors = split_state(state)
    json.dumps(skeleton)
    joined = join_state(json.loads(json.dumps(skeleton)), tensors)
    assert joined["betas"] == (0.9, 0.999) and joined["step"] == 3 and joined["none"] is None
    assert torch.equal(joined[7]["exp_avg"], torch.arange(4.0))
    assert torch.equal(joined["list"][0], torch.ones(2)) and joined["list"][1] == "a"


def test_batches_cover_each_epoch_once_and_are_seeded():
    first_epoch = np.concatenate([batch_indices(0, step, 40, 8) for step in range(5)])
    assert sorted(first_epoch) == list(range(40))
    assert np.array_equal(batch_indices(0, 7, 40, 8), batch_indices(0, 7, 40, 8))
    assert not np.array_equal(batch_indices(0, 5, 40, 8), batch_indices(0, 0, 40, 8))


@pytest.mark.parametrize("model", ["ddpm-unet", "flow-unet"])
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, smoke, model):
    whole = paths_in(tmp_path / "whole", model=model)
    shutil.copytree(tmp_path / "data", tmp_path / "whole" / "data")
    train_model("bars", model, smoke, whole)

    broken = paths_in(tmp_path / "broken", model=model)
    shutil.copytree(tmp_path / "data", tmp_path / "broken" / "data")

    def stop_at_seven(step):
        if step == 7:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model("bars", model, smoke, broken, on_step=stop_at_seven)
    assert not broken.model.exists()
    (run_dir,) = broken.checkpoints.iterdir()
    assert [step for step, _ in checkpoint_folders(run_dir)] == [5]

    summary = train_model("bars", model, smoke, broken)
    assert summary["resumed_from_step"] == 5
    expected, resumed = weights(whole.model), weights(broken.model)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    assert broken.loss_curve.read_text() == whole.loss_curve.read_text()
    info = json.loads((broken.model / "rulekit.json").read_text())
    assert info["model"] == model and info["steps"] == 12


def test_a_corrupt_checkpoint_stops_and_is_never_overwritten(tmp_path, smoke):
    paths = paths_in(tmp_path)

    def stop_at_six(step):
        if step == 6:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model("bars", "ddpm-unet", smoke, paths, on_step=stop_at_six)
    (run_dir,) = paths.checkpoints.iterdir()
    tensors = run_dir / "step-00000005" / "tensors.safetensors"
    damaged = tensors.read_bytes()[:1000]
    tensors.write_bytes(damaged)
    with pytest.raises(DataFileError, match=f"checkpoint file {tensors} is corrupt"):
        train_model("bars", "ddpm-unet", smoke, paths)
    assert tensors.read_bytes() == damaged
    assert [step for step, _ in checkpoint_folders(run_dir)] == [5]
    assert not paths.model.exists()


def test_changed_settings_never_resume_another_runs_checkpoints(tmp_path, smoke):
    paths = paths_in(tmp_path)
    train_model("bars", "ddpm-unet", smoke, paths)
    changed = parse_params(smoke_params(train={**smoke_params()["train"], "learning_rate": 0.001}))
    summary = train_model("bars", "ddpm-unet", changed, paths)
    assert summary["resumed_from_step"] is None
    assert len(list(paths.checkpoints.iterdir())) == 2


def test_train_and_sample_through_the_cli(tmp_path, run_cli, monkeypatch):
    write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert run_cli("generate", "bars").code == 0
    trained = run_cli("train", "bars")
    assert trained.code == 0, trained.err
    assert "trained ddpm-unet on bars: 12 steps" in trained.err
    assert (tmp_path / "models" / "bars" / "ddpm-unet" / WEIGHTS).exists()
    assert (tmp_path / "plots" / "loss" / "bars-ddpm-unet.csv").read_text().startswith("step,loss\n2,")
    sampled = run_cli("sample", "bars", "--model", "ddpm-unet")
    assert sampled.code == 0, sampled.err
    folder = tmp_path / "samples" / "bars" / "ddpm-unet" / "none"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n_samples"] == 8 and meta["sampling_steps"] == 5 and 0 <= meta["summary"]["validity"] <= 1
    assert (folder / "grid.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("train", "bars", "--model", "gan"), "unknown model 'gan'; known models: ddpm-unet, flow-unet"),
        (("sample", "bars", "--guidance", "oracle"), "unknown guidance 'oracle'; known guidance strategies: classifier, filter-classifier, filter-rule, none, rule-gradient"),
        (("sample", "bars"), "models/bars/ddpm-unet/rulekit.json does not exist; run the stage that writes it first"),
        (("train", "bars"), "data/bars/meta.json does not exist; run the stage that writes it first"),
    ],
)
def test_bad_training_and_sampling_requests(tmp_path, run_cli, monkeypatch, args, message):
    write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.code == 2, result.err
    assert result.err.strip().splitlines() == [f"error: {message}"]


def test_two_processes_train_a_model_that_samples_valid_images(tmp_path):
    """Training under torchrun with 2 CPU processes (gloo), then sampling from what it saved."""
    steps = 600
    params = smoke_params(
        n_images=1024,
        network={"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8, "attention": False},
        train={**smoke_params()["train"], "steps": steps, "batch_size": 32, "checkpoint_every": 200, "log_every": 50,
               "warmup_steps": 20, "ema_decay": 0.99},
        sample={"seed": 0, "n_samples": 64, "batch_size": 64, "grid_images": 8},
        sampler_settings={**smoke_params()["sampler_settings"], "ddpm-unet": {"scheduler": "ddim", "steps": 20, "clip_sample": True}},
    )
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_console_script("generate", "bars", cwd=tmp_path).returncode == 0
    env = {**os.environ, "RULEKIT_QUIET": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "rulekit.cli", "train", "bars"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "models" / "bars" / "ddpm-unet" / "rulekit.json").read_text())
    assert info["processes"] == 2 and info["steps"] == steps
    sampled = run_console_script("sample", "bars", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    meta = json.loads((tmp_path / "samples" / "bars" / "ddpm-unet" / "none" / "meta.json").read_text())
    assert meta["summary"]["validity"] >= 0.8, meta["summary"]


def test_a_family_without_settings_stops_before_any_work(tmp_path, run_cli, monkeypatch):
    settings = smoke_params()
    write_params(tmp_path / "params.yaml", model_settings={"ddpm-unet": settings["model_settings"]["ddpm-unet"]},
                 sampler_settings={"ddpm-unet": settings["sampler_settings"]["ddpm-unet"]})
    monkeypatch.chdir(tmp_path)
    assert run_cli("generate", "bars").code == 0
    result = run_cli("train", "bars", "--model", "flow-unet")
    assert result.code == 2
    assert result.err.strip().splitlines() == ["error: model_settings.flow-unet: missing (needed to use model 'flow-unet')"]
    assert not (tmp_path / "models").exists() and not (tmp_path / "checkpoints").exists()
