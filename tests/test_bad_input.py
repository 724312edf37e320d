"""docs/bad-input.md, row by row: each bad input stops with one line, exit code 2, nothing written.

``TABLE`` mirrors the document's table: one ``row`` per line there, with the same id. A row runs
one command in a folder holding a smoke ``params.yaml`` (changed by the row) and, for the rows
about a missing upstream output, what the earlier stages wrote.
"""

from __future__ import annotations

import copy
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, smoke_params

#: Marks a key that a row removes from the smoke params.
DELETE = object()
#: The memory the memory check sees in these tests, so that its rows fail the same way on every machine.
MEMORY_BYTES = 64 * 2**30
#: Overrides that make the training run of the ``trained`` folder as short as training can be.
QUICK_TRAIN = {"train.steps": 1, "train.warmup_steps": 0}


@dataclass(frozen=True)
class Row:
    """One bad input: the command, the params file it reads and the folder it runs in."""

    id: str
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    #: Dotted key paths of the smoke params to set (or ``DELETE``), or None to write no params file.
    params: dict | None
    #: The params file's exact text instead, for files that are not a valid params mapping.
    text: bytes | None
    #: "empty", or a folder where earlier stages ran: "generated" (data/bars) or "trained" (and models/bars).
    folder: str


def row(row_id: str, command: str, *fragments: str, params: dict | None = None, text: str | bytes | None = None,
        no_params_file: bool = False, folder: str = "empty"):
    """A ``TABLE`` entry; ``command`` is split on spaces."""
    raw = text.encode() if isinstance(text, str) else text
    case = Row(row_id, tuple(command.split()), fragments, None if no_params_file else params or {}, raw, folder)
    return pytest.param(case, id=row_id)


TASKS = "known tasks: bars, mirror, perspective, shadow"
GUIDANCE = "known guidance strategies: classifier, filter-classifier, filter-rule, none, rule-gradient"

TABLE = [
    # The command line.
    row("B01", "frobnicate", "No such command 'frobnicate'", "(see: rulekit --help)"),
    row("B02", "generate bars --size 32", "No such option: --size", "(see: rulekit generate --help)"),
    row("B03", "train", "Missing argument 'task'", "(see: rulekit train --help)"),
    row("B04", "generate bars --params", "Option '--params' requires an argument"),
    row("B05", "sample bars shadow", "Got unexpected extra argument(s) (shadow)", "(see: rulekit sample --help)"),
    row("B06", "generate planets", "unknown task 'planets'", TASKS),
    row("B07", "probe Bars", "unknown task 'Bars'", TASKS),
    row("B08", "train bars --model gan", "unknown model 'gan'; known models: ddpm-unet, flow-unet"),
    row("B09", "evaluate bars --guidance prayer", "unknown guidance 'prayer'", GUIDANCE),
    row("B10", "list-plugins --kind rule", "unknown plugin kind 'rule'; known kinds: task, model, guidance, metric, probe-input"),
    # The params file itself.
    row("B11", "generate bars", "params.yaml does not exist; pass --params", no_params_file=True),
    row("B12", "generate bars --params absent.yaml", "absent.yaml does not exist; pass --params"),
    row("B13", "generate bars --params .", ". cannot be read", "Is a directory"),
    row("B14", "generate bars", "params.yaml cannot be read", "can't decode byte 0xff", text=b"\xff\xfetasks: [bars]\n"),
    row("B15", "generate bars", "params.yaml: not valid YAML at line 2", text="tasks: [bars\ngenerate: {\n"),
    row("B16", "generate bars", "params.yaml: expected a mapping of sections at the top level, got list", text="- bars\n- shadow\n"),
    row("B17", "generate bars", "params.yaml: the file is empty; expected a mapping of sections", text=""),
    # Wrong types.
    row("B18", "generate bars", "generate.size: input should be a valid integer, got '32'", params={"generate.size": "32"}),
    row("B19", "generate bars", "train.steps: input should be a valid integer, got [1200]", params={"train.steps": [1200]}),
    row("B20", "generate bars", "tasks: input should be a valid list, got 'bars'", params={"tasks": "bars"}),
    row("B21", "generate bars", "generate.n_images: input should be a valid integer, got True", params={"generate.n_images": True}),
    row("B22", "generate bars", "train.mixed_precision: input should be 'fp32', 'fp16' or 'bf16', got False",
        params={"train.mixed_precision": False}),
    row("B23", "generate bars", "generate: input should be a valid dictionary", params={"generate": None}),
    row("B24", "generate bars", "train.lr_schedule: input should be 'constant', 'cosine' or 'linear', got 'warm'",
        params={"train.lr_schedule": "warm"}),
    row("B25", "generate bars", "sample: missing (required)", params={"sample": DELETE}),
    # Out of range.
    row("B26", "generate bars", "train.steps: input should be greater than or equal to 1, got -5", params={"train.steps": -5}),
    row("B27", "generate bars", "generate.size: input should be greater than or equal to 4, got 2", params={"generate.size": 2}),
    row("B28", "generate bars", "classifier.synthetic_fraction: input should be less than or equal to 1, got 1.5",
        params={"classifier.synthetic_fraction": 1.5}),
    row("B29", "generate bars", "evaluate.confidence: input should be less than 1, got 1.0", params={"evaluate.confidence": 1.0}),
    row("B30", "generate bars", "train.learning_rate: input should be greater than 0, got 0", params={"train.learning_rate": 0}),
    row("B31", "generate bars", "probe.levels[1]: 1.5 is outside [0, 1]", params={"probe.levels": [0.0, 1.5]}),
    row("B32", "generate bars", "sampler_settings.ddpm-unet.steps: input should be greater than or equal to 1, got 0",
        params={"sampler_settings.ddpm-unet.steps": 0}),
    # Unknown keys.
    row("B33", "generate bars", "sampel: unknown key (accepted keys here: tasks, models, guidance,", "sample, classifier",
        params={"sample": DELETE, "sampel": smoke_params()["sample"]}),
    row("B34", "generate bars", "generate.colour: unknown key (accepted keys here: seed, size, n_images, grid_images)",
        params={"generate.colour": "red"}),
    row("B35", "generate bars", "guidance_settings.rule-gradient.through: unknown key (accepted keys here: scale, through_network)",
        params={"guidance_settings.rule-gradient": {"scale": 1.0, "through": True}}),
    row("B36", "generate bars", "guidance_settings.none.scale: unknown key (no keys are accepted here)",
        params={"guidance_settings.none": {"scale": 1.0}}),
    row("B37", "generate bars", "model_settings.ddpm-unet.eta: unknown key (accepted keys here: prediction_type,",
        params={"model_settings.ddpm-unet.eta": 0.0}),
    row("B38", "generate bars", "sampler_settings.ddpm-unet.eta: unknown key (accepted keys here: scheduler, steps, clip_sample)",
        params={"sampler_settings.ddpm-unet.eta": 0.0}),
    # Unknown names.
    row("B39", "generate bars", "tasks[1]: unknown task 'planets'", TASKS, params={"tasks": ["bars", "planets"]}),
    row("B40", "generate bars", "models[1]: unknown model 'gan'; known models: ddpm-unet, flow-unet",
        params={"models": ["ddpm-unet", "gan"]}),
    row("B41", "generate bars", "guidance[1]: unknown guidance 'prayer'", GUIDANCE, params={"guidance": ["none", "prayer"]}),
    row("B42", "generate bars", "guidance_settings[0]: unknown guidance 'prayer'", GUIDANCE,
        params={"guidance_settings.prayer": {}}),
    row("B43", "generate bars", "model_settings[2]: unknown model 'diffusion-gan'", params={"model_settings.diffusion-gan": {}}),
    row("B44", "generate bars", "probe.inputs[1]: unknown probe-input 'clip'; known probe inputs: noised-pixels, pixels,",
        params={"probe.inputs": ["pixels", "clip"]}),
    row("B45", "generate bars", "probe.estimators[0]: unknown estimator 'svm'; known estimators: logistic, mlp",
        params={"probe.estimators": ["svm"]}),
    # Lists and names that do not fit together.
    row("B46", "generate bars", "tasks: list should have at least 1 item", params={"tasks": []}),
    row("B47", "generate bars", "tasks[1]: task 'bars' is listed twice", params={"tasks": ["bars", "bars"]}),
    row("B48", "generate bars", "model_settings.flow-unet: missing (every family in models needs its settings)",
        params={"models": ["ddpm-unet", "flow-unet"], "model_settings.flow-unet": DELETE}),
    row("B49", "generate bars", "guidance_settings.classifier: missing (strategy 'classifier' has settings without defaults)",
        params={"guidance": ["none", "classifier"]}),
    # Shapes.
    row("B50", "generate bars", "generate.size: 12 pixels is outside what task 'shadow' can render (accepted: 16 to 1024)",
        params={"tasks": ["bars", "shadow"], "generate.size": 12}),
    row("B51", "generate bars", "generate.size: a network with 3 levels halves the image 2 times", "multiple of 4; got 18",
        params={"generate.size": 18, "network.block_out_channels": [8, 8, 8]}),
    row("B52", "generate bars", "classifier.channels: 5 levels halve the image 4 times", "multiple of 16; got 24",
        params={"generate.size": 24, "network.block_out_channels": [8], "classifier.channels": [8, 8, 8, 8, 8]}),
    row("B53", "generate bars", "network.block_out_channels[0]: 12 is not a multiple of network.norm_num_groups (8)",
        params={"network.block_out_channels": [12, 16], "network.norm_num_groups": 8}),
    row("B54", "generate bars", "train.batch_size: 10 is not a multiple of train.gradient_accumulation_steps (4)",
        params={"train.batch_size": 10, "train.gradient_accumulation_steps": 4}),
    row("B55", "train bars", "train.batch_size: 128 exceeds the 64 training images", params={"train.batch_size": 128},
        folder="generated"),
    # Guidance settings out of range.
    row("B56", "generate bars", "guidance_settings.classifier.scale: input should be greater than or equal to 0, got -1.0",
        params={"guidance_settings.classifier": {"scale": -1.0}}),
    row("B57", "generate bars", "guidance_settings.filter-rule.oversample: input should be greater than or equal to 1, got 0",
        params={"guidance_settings.filter-rule": {"oversample": 0}}),
    row("B58", "generate bars", "guidance_settings.classifier.scale: input should be a valid number, got 'strong'",
        params={"guidance_settings.classifier": {"scale": "strong"}}),
    # Violations a task cannot make.
    row("B59", "generate bars", "classifier.eval_deltas[1]: 0.5 is outside what task 'bars' can violate (accepted: above 0, at most 0.25)",
        params={"classifier.eval_deltas": [0.05, 0.5]}),
    row("B60", "generate bars", "classifier.synthetic_deltas: 0.5 is outside what task 'bars' can violate",
        params={"classifier.synthetic_deltas": [0.01, 0.5]}),
    row("B61", "generate bars", "classifier.synthetic_deltas: need 0 < smallest <= largest, got [0.05, 0.01]",
        params={"classifier.synthetic_deltas": [0.05, 0.01]}),
    row("B62", "generate bars", "probe.deltas[1]: 0.5 is outside what task 'bars' can violate (accepted: 0 to 0.25)",
        params={"probe.deltas": [0.0, 0.5]}),
    # More than the machine's memory.
    row("B63", "generate bars", "generate.n_images: 10000000 uint8 images of 1024×1024 pixels need 10,520,119,738,368 bytes",
        f"more than this machine's {MEMORY_BYTES:,} bytes", "lower generate.n_images",
        params={"generate.size": 1024, "generate.n_images": 10_000_000}),
    row("B64", "generate bars", "sample.n_samples: 1000000 float32 samples of 1024×1024 pixels need 4,194,304,000,000 bytes",
        "lower sample.n_samples", params={"generate.size": 1024, "sample.n_samples": 1_000_000}),
    row("B65", "generate bars", "evaluate.n_samples: 100000 float32 samples of 256×256 pixels drawn 1000× over "
        "(guidance_settings.filter-rule.oversample) need 26,214,400,000,000 bytes", "lower evaluate.n_samples",
        params={"generate.size": 256, "evaluate.n_samples": 100_000, "guidance": ["none", "filter-rule"],
                "guidance_settings.filter-rule": {"oversample": 1000}}),
    row("B66", "generate bars", "probe.n_per_class: 200000 float32 images of 1024×1024 pixels for each of 3 probe inputs "
        "need 2,516,582,400,000 bytes", "lower probe.n_per_class",
        params={"generate.size": 1024, "probe.n_per_class": 100_000}),
    # A stage run before the stage that writes its input.
    row("B67", "train bars", "data/bars/meta.json does not exist"),
    row("B68", "sample bars", "models/bars/ddpm-unet/rulekit.json does not exist", folder="generated"),
    row("B69", "train-classifier bars", "models/bars/ddpm-unet/rulekit.json does not exist; make it first: rulekit train bars --model ddpm-unet",
        folder="generated"),
    row("B70", "train-classifier bars", "samples/bars/ddpm-unet/none/data.safetensors does not exist; make it first: "
        "rulekit sample bars --model ddpm-unet", folder="trained"),
    row("B71", "evaluate bars --guidance classifier", "guidance 'classifier' needs a trained rule classifier, but "
        "classifiers/bars/ddpm-unet does not exist; train it first: rulekit train-classifier bars --model ddpm-unet",
        params={"guidance_settings.classifier": {"scale": 1.0}}, folder="trained"),
    row("B72", "sample bars --guidance filter-classifier", "guidance 'filter-classifier' needs a trained rule classifier",
        params={"guidance_settings.filter-classifier": {"oversample": 2}}, folder="trained"),
    row("B73", "probe bars", "models/bars/ddpm-unet/rulekit.json does not exist", folder="generated"),
    row("B74", "probe bars", "classifiers/bars/ddpm-unet holds no rule classifier; train it with rulekit train-classifier",
        params={"probe.inputs": ["pixels", "rule-classifier"]}, folder="trained"),
    row("B75", "report", "metrics/bars/ddpm-unet/guidance/none.json does not exist", folder="trained"),
]


def params_with(changes: dict) -> dict:
    """The smoke params with each dotted key path set to its value (or removed, for ``DELETE``)."""
    params = smoke_params()
    for path, value in changes.items():
        *parents, last = path.split(".")
        section = params
        for key in parents:
            section = section[key]
        if value is DELETE:
            del section[last]
        else:
            section[last] = copy.deepcopy(value)
    return params


def snapshot(root: Path) -> dict[str, tuple]:
    """Every folder and file under ``root``, files with their size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else "folder"
        for path in root.rglob("*")
    }


def _run_stages(root: Path, trained: bool) -> Path:
    from rulekit.params import parse_params
    from rulekit.stages.generate import generate
    from rulekit.stages.train import default_paths, train

    params = parse_params(params_with(QUICK_TRAIN))
    generate("bars", params, root / "data" / "bars")
    if trained:
        train("bars", "ddpm-unet", params, default_paths("bars", "ddpm-unet", root))
    return root


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A folder where ``rulekit generate bars`` ran."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RULEKIT_QUIET", "1")
        return _run_stages(tmp_path_factory.mktemp("generated"), trained=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder where ``rulekit generate bars`` and ``rulekit train bars`` ran."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RULEKIT_QUIET", "1")
        return _run_stages(tmp_path_factory.mktemp("trained"), trained=True)


@pytest.mark.parametrize("case", TABLE)
def test_bad_input_stops_with_one_line_and_writes_nothing(case, run_cli, tmp_path, monkeypatch, request):
    monkeypatch.setattr("rulekit.params.physical_memory_bytes", lambda: MEMORY_BYTES)
    if case.folder != "empty":
        shutil.copytree(request.getfixturevalue(case.folder), tmp_path, dirs_exist_ok=True)
    params_file = tmp_path / "params.yaml"
    if case.text is not None:
        params_file.write_bytes(case.text)
    elif case.params is not None:
        params_file.write_text(yaml.safe_dump(params_with(case.params), sort_keys=False, allow_unicode=True))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)

    result = run_cli(*case.args)

    assert result.code == 2, result.err
    assert "Traceback" not in result.err + result.out
    assert result.err.endswith("\n") and len(result.err.splitlines()) == 1, result.err
    line = result.err.rstrip("\n")
    assert line.startswith("error: "), line
    for fragment in case.fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert snapshot(tmp_path) == before


def test_every_row_is_in_the_document():
    """The table above and the one in docs/bad-input.md list the same ids, so neither drifts."""
    document = (REPO / "docs" / "bad-input.md").read_text()
    documented = re.findall(r"^\| (B\d\d) \|", document, flags=re.MULTILINE)
    tested = [param.values[0].id for param in TABLE]
    assert len(set(tested)) == len(tested)
    assert sorted(documented) == sorted(tested)
