"""Detectability probes: inputs see what they claim to, AUCs mean what they claim to, rows are
complete and reproducible, and results are written safely."""

import csv

import numpy as np
import pytest
import torch

from rulekit.models.ddpm import DDPMSamplerSettings, DDPMTrainSettings
from rulekit.models.flow import FlowSamplerSettings, FlowTrainSettings
from rulekit.params import NetworkParams
from rulekit.probes import ProbeContext, ProbeError, ProbeInput
from rulekit.probes import inputs as probe_inputs
from rulekit.probes.inputs import NoisedPixels, Pixels, UNetMid, noise_seed
from rulekit.probes.run import COLUMNS, ESTIMATORS, probe_task, write_rows_csv
from rulekit.registry import Registry, get_registry

from conftest import SMOKE_PARAMS

SIZE = 16


def model(family_name: str = "ddpm-unet"):
    """The smoke configuration's process and a freshly built (untrained) tiny network."""
    family = get_registry().get("model", family_name)
    if family_name == "ddpm-unet":
        process = family.process(
            DDPMTrainSettings(**SMOKE_PARAMS["model_settings"]["ddpm-unet"]),
            DDPMSamplerSettings(**SMOKE_PARAMS["sampler_settings"]["ddpm-unet"]),
        )
    else:
        process = family.process(
            FlowTrainSettings(**SMOKE_PARAMS["model_settings"]["flow-unet"]),
            FlowSamplerSettings(**SMOKE_PARAMS["sampler_settings"]["flow-unet"]),
        )
    torch.manual_seed(0)
    return process, family.build_network(NetworkParams(**SMOKE_PARAMS["network"]), SIZE)


def context(task_name: str = "bars", seed: int = 0, family_name: str | None = None) -> ProbeContext:
    task = get_registry().task(task_name)
    if family_name is None:
        return ProbeContext(task, SIZE, seed)
    process, network = model(family_name)
    return ProbeContext(task, SIZE, seed, process, network)


def images(n: int = 5, seed: int = 0) -> np.ndarray:
    task = get_registry().task("bars")
    return task.render(task.sample(np.random.default_rng(seed), n), SIZE)


def auc_of(rows, **match) -> float:
    (row,) = [row for row in rows if all(row[key] == value for key, value in match.items())]
    return row["auc"]


# ---- the inputs -------------------------------------------------------------------------------


def test_builtin_inputs_register_through_the_hook():
    registry = Registry(builtins=("rulekit.probes.inputs",), use_entry_points=False)
    assert registry.failures == []
    assert registry.names("probe-input") == ["noised-pixels", "pixels", "rule-classifier", "unet-mid"]
    assert all(isinstance(registry.get("probe-input", name), ProbeInput) for name in registry.names("probe-input"))


def test_pixels_are_the_flattened_image():
    batch = images(4)
    features = Pixels().features(batch, None, context())
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, batch.reshape(4, SIZE * SIZE))


@pytest.mark.parametrize("family_name", ["ddpm-unet", "flow-unet"])
def test_noised_pixels_are_the_process_noising_with_a_seed_per_level(family_name):
    probe_context = context(family_name=family_name)
    batch = images(6)
    level = 0.3
    clean = torch.from_numpy(batch).unsqueeze(1) * 2 - 1
    expected, _ = probe_context.process.noised(clean, level, torch.Generator().manual_seed(noise_seed(0, level)))
    features = NoisedPixels().features(batch, level, probe_context)
    assert features.dtype == np.float32 and features.shape == (6, SIZE * SIZE)
    np.testing.assert_array_equal(features, expected.numpy().reshape(6, -1))
    np.testing.assert_array_equal(features, NoisedPixels().features(batch, level, probe_context))
    assert not np.allclose(features, NoisedPixels().features(batch, 0.6, probe_context))


def test_rule_classifier_features_are_its_penultimate_layer_on_the_same_noised_pixels(monkeypatch):
    from rulekit.classifier.network import build_classifier
    from rulekit.probes.inputs import RuleClassifierFeatures

    probe_context = context(family_name="ddpm-unet")
    torch.manual_seed(1)
    probe_context.classifier = build_classifier(SIZE, [8, 16], 12)
    probe_context.classifier.train()
    batch = images(5)
    monkeypatch.setattr(probe_inputs, "FORWARD_BATCH", 2)
    features = RuleClassifierFeatures().features(batch, 0.3, probe_context)
    assert features.dtype == np.float32 and features.shape == (5, 12)
    assert probe_context.classifier.training  # left as it was found
    noisy = torch.from_numpy(NoisedPixels().features(batch, 0.3, probe_context)).reshape(5, 1, SIZE, SIZE)
    probe_context.classifier.eval()
    with torch.no_grad():
        expected = probe_context.classifier.features(noisy, torch.full((5,), 0.3)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ProbeError, match="needs the model's trained rule classifier"):
        RuleClassifierFeatures().features(batch, 0.3, context(family_name="ddpm-unet"))


def test_noised_pixels_need_a_process_and_a_level():
    with pytest.raises(ProbeError, match="noised-pixels"):
        NoisedPixels().features(images(2), 0.5, context())
    with pytest.raises(ProbeError, match="noise level"):
        NoisedPixels().features(images(2), None, context(family_name="ddpm-unet"))


def test_unet_mid_is_the_mid_block_output_of_a_full_forward_pass(monkeypatch):
    probe_context = context(family_name="ddpm-unet")
    network = probe_context.network
    network.train()
    batch = images(7)
    level = 0.4
    monkeypatch.setattr(probe_inputs, "FORWARD_BATCH", 3)
    features = UNetMid().features(batch, level, probe_context)

    channels = network.config.block_out_channels[-1]
    side = SIZE // 2 ** (len(network.config.block_out_channels) - 1)
    assert features.dtype == np.float32
    assert features.shape == (7, channels * side * side) == (7, 16 * 8 * 8)
    assert np.all(np.isfinite(features))
    # The network is left as it was found: in training mode, with no hook attached.
    assert network.training
    assert len(network.mid_block._forward_hooks) == 0

    noisy, time = probe_inputs.noised_images(batch, level, probe_context, "unet-mid")
    captured = []
    handle = network.mid_block.register_forward_hook(lambda module, args, output: captured.append(output))
    network.eval()
    with torch.no_grad():
        probe_context.process.predict(network, noisy, time)
    handle.remove()
    np.testing.assert_allclose(features, captured[0].numpy().reshape(7, -1), rtol=1e-5, atol=1e-5)


# ---- what the probes measure ------------------------------------------------------------------


def test_logistic_pixel_probe_sees_a_large_violation_and_nothing_without_one():
    task = get_registry().task("bars")
    rows = probe_task(context(), [Pixels()], [0.0, task.max_violation], [], 500, ["logistic"])
    assert auc_of(rows, delta=task.max_violation) > 0.95
    # 300 test images per class: chance AUC has a standard deviation of about 0.024.
    assert abs(auc_of(rows, delta=0.0) - 0.5) < 0.1


@pytest.mark.parametrize("family_name", ["ddpm-unet", "flow-unet"])
def test_pure_noise_hides_even_a_large_violation(family_name):
    task = get_registry().task("bars")
    rows = probe_task(
        context(family_name=family_name), [NoisedPixels()], [task.max_violation], [0.0, 1.0], 300, list(ESTIMATORS)
    )
    for estimator in ESTIMATORS:
        assert auc_of(rows, estimator=estimator, level=0.0) > 0.9
        assert abs(auc_of(rows, estimator=estimator, level=1.0) - 0.5) < 0.12


# ---- rows -------------------------------------------------------------------------------------


def small_probe(seed: int = 0, deltas=(0.0, 0.05)):
    return probe_task(
        context(seed=seed, family_name="ddpm-unet"),
        [Pixels(), NoisedPixels(), UNetMid()],
        list(deltas),
        [0.0, 0.5],
        25,
        ["logistic", "mlp"],
        test_fraction=0.3,
    )


@pytest.fixture(scope="module")
def rows():
    return small_probe()


def test_rows_have_one_row_per_delta_input_level_and_estimator(rows):
    assert all(tuple(row) == COLUMNS for row in rows)
    keys = [(row["delta"], row["input"], row["level"], row["estimator"]) for row in rows]
    expected = [
        (delta, name, level, estimator)
        for delta in (0.0, 0.05)
        for name, levels in (("pixels", [None]), ("noised-pixels", [0.0, 0.5]), ("unet-mid", [0.0, 0.5]))
        for level in levels
        for estimator in ("logistic", "mlp")
    ]
    assert keys == expected
    assert {row["task"] for row in rows} == {"bars"}
    # 50 images, 30 % held out: sklearn rounds the test set up to 15.
    assert {(row["n_train"], row["n_test"]) for row in rows} == {(35, 15)}
    assert all(0.0 <= row["auc"] <= 1.0 for row in rows)


def test_rows_are_reproducible_from_the_seed(rows):
    assert small_probe() == rows
    other = small_probe(seed=1)
    assert [row["auc"] for row in other] != [row["auc"] for row in rows]
    # A δ's images and split are keyed by its value, not by what else was asked for.
    alone = small_probe(deltas=(0.05,))
    assert alone == [row for row in rows if row["delta"] == 0.05]


def test_deltas_beyond_the_tasks_range_stop_before_any_work():
    task = get_registry().task("perspective")
    probe_context = ProbeContext(task, SIZE, 0)
    with pytest.raises(ProbeError, match=r"δ=0\.1 .*0 to 0\.08") as error:
        probe_task(probe_context, [Pixels()], [0.0, 0.1], [], 20, ["logistic"])
    assert isinstance(error.value, ValueError)
    with pytest.raises(ProbeError, match="δ=-0.01"):
        probe_task(probe_context, [Pixels()], [-0.01], [], 20, ["logistic"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(estimators=["forest"]), "unknown estimator 'forest'; known estimators: logistic, mlp"),
        (dict(inputs=[UNetMid()]), "'unet-mid' needs a trained model"),
        (dict(levels=[1.5]), r"noise level 1\.5 is outside \[0, 1\]"),
        (dict(test_fraction=1.0), "test fraction"),
        (dict(n_per_class=2), "fewer than two"),
    ],
)
def test_bad_arguments_stop_with_what_is_wrong(arguments, message):
    call = dict(inputs=[Pixels()], deltas=[0.0], levels=[0.5], n_per_class=20, estimators=["logistic"]) | arguments
    with pytest.raises(ProbeError, match=message):
        probe_task(context(), **call)


# ---- the CSV file -----------------------------------------------------------------------------


def test_csv_holds_every_row_and_no_temporary_file_remains(rows, tmp_path):
    path = tmp_path / "probes" / "bars.csv"
    write_rows_csv(rows, path)
    assert [entry.name for entry in path.parent.iterdir()] == ["bars.csv"]
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        read = list(reader)
    assert len(read) == len(rows)
    for written, row in zip(read, rows):
        assert written["task"] == row["task"] and written["input"] == row["input"]
        assert written["estimator"] == row["estimator"]
        assert float(written["delta"]) == row["delta"]
        assert written["level"] == ("" if row["level"] is None else repr(row["level"]))
        assert float(written["auc"]) == row["auc"]
        assert int(written["n_train"]) == row["n_train"] and int(written["n_test"]) == row["n_test"]


def test_csv_of_no_rows_is_just_the_header(tmp_path):
    path = tmp_path / "empty.csv"
    write_rows_csv([], path)
    assert path.read_text() == ",".join(COLUMNS) + "\n"
