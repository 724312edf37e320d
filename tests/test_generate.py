"""``rulekit generate``: what it writes, that it is reproducible, and that it never loses data."""

import json

import numpy as np
import pytest

from rulekit import storage
from rulekit.dataset import read_dataset
from rulekit.errors import DataFileError
from rulekit.registry import get_registry

from conftest import run_console_script, write_params, REPO


def test_generate_writes_images_features_meta_and_grid(run_cli, tmp_path):
    params = write_params(tmp_path / "params.yaml", tasks=("shadow",), size=24, n_images=100)
    result = run_cli("generate", "shadow", "--params", str(params), "--out", str(tmp_path / "shadow"))
    assert result.code == 0, result.err
    data = read_dataset(tmp_path / "shadow")
    assert data.images.shape == (100, 24, 24) and data.images.dtype == np.uint8
    assert data.features.shape == (100, 3)
    meta = data.meta
    assert meta["task"] == "shadow" and meta["size"] == 24 and meta["n_images"] == 100 and meta["seed"] == 0
    assert meta["feature_names"] == ["xs", "ys", "L"]
    assert meta["rule_constants"]["pole_height"] == 0.2
    assert meta["rulekit_version"] == "0.1.0"
    assert meta["noise_floor"]["max_feature_error"] < 0.002
    assert meta["noise_floor"]["coarse_accuracy"] == 1.0
    task = get_registry().task("shadow")
    assert np.abs(task.residual(data.features)).max() < 1e-12
    assert (tmp_path / "shadow" / "grid.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml", "shadow"]


def test_generate_is_byte_for_byte_reproducible(run_cli, tmp_path):
    params = write_params(tmp_path / "params.yaml", tasks=("mirror",), n_images=50)
    for folder in ("first", "second"):
        assert run_cli("generate", "mirror", "--params", str(params), "--out", str(tmp_path / folder)).code == 0
    for name in ("data.safetensors", "grid.png", "meta.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_tasks_with_one_seed_get_different_streams(run_cli, tmp_path):
    params = write_params(tmp_path / "params.yaml", tasks=("bars", "perspective"), n_images=20)
    for name in ("bars", "perspective"):
        assert run_cli("generate", name, "--params", str(params), "--out", str(tmp_path / name)).code == 0
    bars = read_dataset(tmp_path / "bars").features[:, 0]
    perspective = read_dataset(tmp_path / "perspective").features[:, 0]
    assert not np.allclose((bars - 0.2) / 0.6, (perspective - 0.05) / 0.35)


def test_a_failed_generate_leaves_the_previous_data_untouched(run_cli, tmp_path, monkeypatch):
    params = write_params(tmp_path / "params.yaml", n_images=30)
    out = tmp_path / "bars"
    assert run_cli("generate", "bars", "--params", str(params), "--out", str(out)).code == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    write_params(tmp_path / "params.yaml", n_images=60)
    monkeypatch.setattr("rulekit.dataset.save_grid", disk_full)
    with pytest.raises(OSError):
        from rulekit.params import load_params
        from rulekit.stages.generate import generate

        generate("bars", load_params(params), out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bars", "params.yaml"]


def test_the_example_plugin_task_generates_with_no_change_to_rulekit(tmp_path):
    params = write_params(tmp_path / "params.yaml", tasks=("tally",), size=16, n_images=40)
    result = run_console_script("generate", "tally", "--params", str(params), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = read_dataset(tmp_path / "data" / "tally")
    assert data.meta["task"] == "tally" and data.images.shape == (40, 16, 16)
    task = get_registry().task("tally")
    measured = task.measure(data.images)
    np.testing.assert_allclose(measured[:, 0], data.features[:, 0], atol=0.05)
    assert np.abs(measured[:, 1] - data.features[:, 1]).max() < 0.002
    assert task.coarse_ok(measured).all()


def test_corrupt_and_unsafe_data_files_are_refused_by_name(tmp_path):
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"task": "bars"}))
    storage.save_arrays(folder / "data.safetensors", {"images": np.zeros((2, 8, 8), np.uint8), "features": np.zeros((2, 2))})
    good = (folder / "data.safetensors").read_bytes()
    (folder / "data.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFileError, match="data.safetensors is not a valid safetensors file"):
        read_dataset(folder)
    # A pickle dressed up as data is never unpickled.
    import pickle

    (folder / "data.safetensors").write_bytes(pickle.dumps({"images": np.zeros(3)}))
    with pytest.raises(DataFileError, match="not a valid safetensors file"):
        read_dataset(folder)
    storage.save_arrays(folder / "data.safetensors", {"images": np.zeros((2, 8, 8), np.uint8)})
    with pytest.raises(DataFileError, match="lacks the arrays features"):
        read_dataset(folder)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(DataFileError, match="meta.json is not valid JSON"):
        read_dataset(folder)


def test_committed_params_are_valid_and_list_the_four_tasks():
    from rulekit.params import load_params

    params = load_params(REPO / "params.yaml")
    assert params.tasks == ["bars", "shadow", "mirror", "perspective"]


def test_the_paper_profile_is_valid_and_larger_than_the_quick_one():
    from rulekit.params import load_params

    quick, paper = load_params(REPO / "params.yaml"), load_params(REPO / "profiles" / "paper.yaml")
    assert paper.tasks == quick.tasks
    assert paper.generate.size in (32, 64) and paper.generate.size > quick.generate.size
    assert paper.train.steps >= 10_000 and paper.sample.n_samples >= 1000
    assert sum(paper.network.block_out_channels) > sum(quick.network.block_out_channels)
