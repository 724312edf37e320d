"""The command line: listing plugins, and one clear line with exit code 2 for every bad input."""

import json

import pytest

from conftest import BUILTIN_TASKS, REPO, SMOKE_PARAMS, run_console_script, write_params


def test_list_plugins_json_lists_every_task():
    result = run_console_script("list-plugins", "--json", cwd=REPO)
    rows = json.loads(result.stdout)
    tasks = {row["name"] for row in rows if row["kind"] == "task"}
    assert tasks == set(BUILTIN_TASKS) | {"tally"}
    assert all(set(row) == {"kind", "name", "plugin", "distribution", "version", "description", "status", "error"} for row in rows)


def test_list_plugins_table_and_kind_filter(run_cli):
    table = run_cli("list-plugins")
    assert table.code == 0
    for name in BUILTIN_TASKS:
        assert name in table.out
    models = json.loads(run_cli("list-plugins", "--kind", "model", "--json").out)
    assert [(row["kind"], row["name"]) for row in models] == [("model", "ddpm-unet"), ("model", "flow-unet")]
    only_tasks = json.loads(run_cli("list-plugins", "--kind", "task", "--json").out)
    assert {row["kind"] for row in only_tasks} == {"task"}


def test_without_the_example_plugin_there_are_four_tasks(run_cli, monkeypatch):
    monkeypatch.setenv("RULEKIT_DISABLE_PLUGINS", "tally")
    rows = json.loads(run_cli("list-plugins", "--json").out)
    assert sorted(row["name"] for row in rows if row["kind"] == "task") == sorted(BUILTIN_TASKS)
    assert {row["name"] for row in rows if row["kind"] == "model"} == {"ddpm-unet", "flow-unet"}
    assert all(row["status"] == "ok" for row in rows)


def one_line_error(result, *fragments):
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


BAD_PARAMS = [
    ({"generate": {"seed": 0, "size": 16, "n_images": 8, "grid_images": 4, "colour": "red"}},
     ["generate.colour: unknown key", "accepted keys here: seed, size, n_images, grid_images"]),
    ({"generate": {"seed": 0, "size": "32", "n_images": 8, "grid_images": 4}}, ["generate.size", "valid integer", "'32'"]),
    ({"generate": {"seed": 0, "size": 16, "n_images": 0, "grid_images": 4}}, ["generate.n_images", "greater than or equal to 1", "got 0"]),
    ({"generate": {"seed": -1, "size": 16, "n_images": 8, "grid_images": 4}}, ["generate.seed", "greater than or equal to 0"]),
    ({"generate": {"seed": 0, "size": 12, "n_images": 8, "grid_images": 4}}, ["generate.size: 12 pixels", "task 'shadow'", "accepted: 16 to 1024"]),
    ({"generate": {"seed": 0, "size": 16, "n_images": 8}}, ["generate.grid_images: missing"]),
    ({"tasks": []}, ["tasks", "at least 1 item"]),
    ({"tasks": ["bars", "planets"]}, ["tasks[1]: unknown task 'planets'", "known tasks: bars, mirror, perspective, shadow"]),
    ({"tasks": ["bars", "bars"]}, ["tasks[1]: task 'bars' is listed twice"]),
    ({"tasks": "bars"}, ["tasks", "valid list"]),
    ({"models": ["ddpm-unet", "gan"]}, ["models[1]: unknown model 'gan'", "known models: ddpm-unet, flow-unet"]),
    ({"train": {**SMOKE_PARAMS["train"], "steps": -5}}, ["train.steps", "greater than or equal to 1", "got -5"]),
    ({"train": {**SMOKE_PARAMS["train"], "learning_rate": "1e-3"}}, ["train.learning_rate", "valid number", "'1e-3'"]),
    ({"train": {**SMOKE_PARAMS["train"], "lr_schedule": "warm"}}, ["train.lr_schedule", "'constant', 'cosine' or 'linear'"]),
    ({"train": {**SMOKE_PARAMS["train"], "batch_size": 10, "gradient_accumulation_steps": 4}},
     ["train.batch_size: 10 is not a multiple of train.gradient_accumulation_steps (4)"]),
    ({"model_settings": {**SMOKE_PARAMS["model_settings"], "ddpm-unet": {"prediction_type": "noise", "num_train_timesteps": 1000, "beta_schedule": "linear"}}},
     ["model_settings.ddpm-unet.prediction_type", "'epsilon', 'sample' or 'v_prediction'"]),
    ({"model_settings": {"flow-unet": {"time_sampling": "uniform"}}}, ["model_settings.ddpm-unet: missing"]),
    ({"sampler_settings": {**SMOKE_PARAMS["sampler_settings"], "diffusion-gan": {}}}, ["sampler_settings[2]: unknown model 'diffusion-gan'"]),
    ({"network": {"block_out_channels": [12, 16], "layers_per_block": 1, "norm_num_groups": 8, "attention": False}},
     ["network.block_out_channels[0]: 12 is not a multiple of network.norm_num_groups (8)"]),
    ({"sample": {**SMOKE_PARAMS["sample"], "n_samples": 0}}, ["sample.n_samples", "greater than or equal to 1"]),
    ({"guidance": ["none", "prayer"]}, ["guidance[1]: unknown guidance 'prayer'", "known guidance strategies:"]),
    ({"guidance": ["none", "classifier"]}, ["guidance_settings.classifier: missing", "without defaults"]),
    ({"guidance_settings": {"classifier": {"scale": -1.0}}}, ["guidance_settings.classifier.scale", "greater than or equal to 0"]),
    ({"guidance_settings": {"filter-rule": {"oversample": 0}}}, ["guidance_settings.filter-rule.oversample", "greater than or equal to 1"]),
    ({"guidance_settings": {"rule-gradient": {"scale": 1.0, "through_network": True, "through": True}}}, ["guidance_settings.rule-gradient.through: unknown key", "scale, through_network"]),
    ({"classifier": {**SMOKE_PARAMS["classifier"], "eval_deltas": [0.05, 0.5]}}, ["classifier.eval_deltas[1]: 0.5 is outside what task 'bars' can violate"]),
    ({"classifier": {**SMOKE_PARAMS["classifier"], "synthetic_deltas": [0.05, 0.01]}}, ["classifier.synthetic_deltas: need 0 < smallest <= largest"]),
    ({"classifier": {**SMOKE_PARAMS["classifier"], "channels": [8, 8, 8, 8, 8]}, "generate": {**SMOKE_PARAMS["generate"], "size": 24}},
     ["classifier.channels: 5 levels halve the image 4 times", "multiple of 16; got 24"]),
    ({"extra_section": {}}, ["extra_section: unknown key", "accepted keys here: tasks, models, guidance, guidance_settings, generate, network, train, model_settings, sampler_settings, sample, classifier, evaluate, probe"]),
]


@pytest.mark.parametrize("overrides, fragments", BAD_PARAMS)
def test_bad_params_stop_with_the_key_path_and_write_nothing(run_cli, tmp_path, overrides, fragments):
    params = write_params(tmp_path / "params.yaml", **{"tasks": ("bars", "shadow"), **overrides})
    out = tmp_path / "out"
    result = run_cli("generate", "bars", "--params", str(params), "--out", str(out))
    one_line_error(result, *fragments)
    assert not out.exists()


def test_network_that_cannot_take_the_image_size(run_cli, tmp_path):
    params = write_params(tmp_path / "params.yaml", size=18,
                          network={"block_out_channels": [8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4, "attention": False})
    one_line_error(run_cli("generate", "bars", "--params", str(params)), "generate.size", "must be a multiple of 4; got 18")


def test_params_that_are_not_yaml_or_not_a_mapping(run_cli, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("tasks: [bars\ngenerate: {")
    one_line_error(run_cli("generate", "bars", "--params", str(broken)), "not valid YAML at line")
    listing = tmp_path / "list.yaml"
    listing.write_text("- bars\n")
    one_line_error(run_cli("generate", "bars", "--params", str(listing)), "expected a mapping of sections")
    one_line_error(run_cli("generate", "bars", "--params", str(tmp_path / "absent.yaml")), "absent.yaml does not exist")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("generate", "planets"), ["unknown task 'planets'", "known tasks: bars, mirror, perspective, shadow, tally"]),
        (("list-plugins", "--kind", "rule"), ["unknown plugin kind 'rule'", "known kinds: task, model, guidance, metric"]),
        (("generate",), ["Missing argument 'task'"]),
        (("generate", "bars", "--size", "3"), ["No such option: --size"]),
        (("frobnicate",), ["No such command 'frobnicate'"]),
    ],
)
def test_bad_command_lines(run_cli, args, fragments):
    one_line_error(run_cli(*args), *fragments)


def test_the_console_script_prints_no_traceback(tmp_path):
    result = run_console_script("generate", "planets", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown task 'planets'; known tasks: bars, mirror, perspective, shadow, tally"
    ]
