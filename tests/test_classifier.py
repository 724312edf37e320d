"""The rule classifier: it learns the rule, round-trips through disk, refuses damaged files,
trains reproducibly, and its stage writes every output from a model's folders."""

import json

import numpy as np
import pytest
import torch

from rulekit.classifier.network import CONFIG_FILE, WEIGHTS_FILE, build_classifier, load_classifier, save_classifier
from rulekit.classifier.train import (
    ClassifierData,
    training_batch,
    evaluate_classifier,
    rejected_samples,
    split_held_out,
    synthetic_negatives,
    train_rule_classifier,
)
from rulekit.dataset import ImageSet, to_uint8, write_image_set
from rulekit.errors import DataFileError, RulekitError
from rulekit.params import parse_params
from rulekit.registry import get_registry
from rulekit.stages.generate import generate
from rulekit.stages.train_classifier import COLUMNS, default_paths, train_classifier
from rulekit.training import MODEL_INFO_FILE

from conftest import smoke_params

MODEL = "ddpm-unet"


def params_with(task: str = "bars", **classifier):
    raw = smoke_params(tasks=[task])
    raw["classifier"].update(classifier)
    return parse_params(raw)


def process_of(params):
    family = get_registry().get("model", MODEL)
    return family.process(params.train_settings_for(MODEL), params.sampler_settings_for(MODEL))


def rendered(task, seed: int, n: int, size: int = 16, delta: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = task.sample(rng, n)
    if delta:
        features = task.violate(features, delta, rng)
    return to_uint8(task.render(features, size))


def synthetic_only_data(task, n: int = 64) -> ClassifierData:
    images = rendered(task, 0, n)
    return split_held_out(images, images[:0], 0.25, seed=0)


def test_learns_to_separate_a_large_violation_from_the_rule_on_clean_images():
    task = get_registry().task("bars")
    params = params_with(
        synthetic_fraction=1.0, synthetic_deltas=[0.1, 0.25], channels=[8, 16], hidden=32, steps=60, batch_size=64,
        learning_rate=0.003, max_level=0.3, eval_deltas=[0.15], eval_levels=[0.0], n_eval_per_class=100,
    )
    data = synthetic_only_data(task, n=512)
    trained = train_rule_classifier(task, process_of(params), data, params.classifier)
    rows = evaluate_classifier(trained.classifier, task, process_of(params), data, params.classifier)
    assert [(row["source"], row["delta"], row["level"], row["n"]) for row in rows] == [("synthetic", 0.15, 0.0, 200)]
    assert rows[0]["auc"] > 0.9
    assert trained.final_loss < 0.5 < np.mean(trained.losses[:10])


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not():
    task = get_registry().task("bars")
    data = synthetic_only_data(task)
    params = params_with(steps=4, synthetic_fraction=1.0)
    process = process_of(params)
    first = train_rule_classifier(task, process, data, params.classifier).classifier.state_dict()
    second = train_rule_classifier(task, process, data, params.classifier).classifier.state_dict()
    other = train_rule_classifier(task, process, data, params_with(steps=4, synthetic_fraction=1.0, seed=1).classifier)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], tensor) for name, tensor in other.classifier.state_dict().items())


def test_logits_features_and_gradient_shapes():
    torch.manual_seed(0)
    classifier = build_classifier(16, [8, 16], 24)
    x = torch.randn(5, 1, 16, 16, requires_grad=True)
    levels = torch.linspace(0, 1, 5)
    assert classifier.features(x, levels).shape == (5, 24)
    logits = classifier(x, levels)
    assert logits.shape == (5,)
    # Guidance differentiates the log-probability with respect to the noisy image.
    (gradient,) = torch.autograd.grad(torch.nn.functional.logsigmoid(logits).sum(), x)
    assert gradient.shape == x.shape and gradient.abs().sum() > 0
    # One float level means that level for every image.
    assert torch.allclose(classifier(x, 0.5), classifier(x, torch.full((5,), 0.5)))
    # The level changes the output: the network is conditioned on it.
    classifier.blocks[0].film.weight.data.normal_()
    assert not torch.allclose(classifier(x, 0.0), classifier(x, 0.9))


def test_save_and_load_give_identical_logits(tmp_path):
    torch.manual_seed(0)
    classifier = build_classifier(16, [8, 16], 24)
    save_classifier(classifier, tmp_path / "clf", {"task": "bars"})
    loaded = load_classifier(tmp_path / "clf")
    x, levels = torch.randn(6, 1, 16, 16), torch.rand(6)
    with torch.no_grad():
        assert torch.equal(classifier(x, levels), loaded(x, levels))
    payload = json.loads((tmp_path / "clf" / CONFIG_FILE).read_text())
    assert payload == {"architecture": {"size": 16, "channels": [8, 16], "hidden": 24}, "info": {"task": "bars"}}
    assert sorted(path.name for path in (tmp_path).iterdir()) == ["clf"]


def test_damaged_classifier_files_stop_with_the_files_name(tmp_path):
    folder = tmp_path / "clf"
    save_classifier(build_classifier(16, [8, 16], 24), folder, {})
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DataFileError, match=f"{weights}.*not a valid safetensors"):
        load_classifier(folder)

    save_classifier(build_classifier(16, [8], 24), folder, {})
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["architecture"]["channels"] = [8, 16]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(DataFileError, match=f"{weights} does not match"):
        load_classifier(folder)

    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(DataFileError, match=f"{folder / CONFIG_FILE} is not valid JSON"):
        load_classifier(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({"architecture": {"size": 16, "channels": "8", "hidden": 24}}))
    with pytest.raises(DataFileError, match="positive integers"):
        load_classifier(folder)
    with pytest.raises(DataFileError, match=f"{tmp_path / 'missing'} holds no rule classifier"):
        load_classifier(tmp_path / "missing")


def test_rejected_samples_are_the_valid_ones_beyond_the_threshold():
    task = get_registry().task("bars")
    features = task.sample(np.random.default_rng(0), 4)
    moved = task.violate(features, 0.05, np.random.default_rng(1))
    features = np.concatenate([features, moved])
    images = np.arange(8, dtype=np.uint8)[:, None, None] * np.ones((1, 16, 16), dtype=np.uint8)
    valid = np.array([1, 1, 0, 1, 1, 0, 1, 1], dtype=np.uint8)
    features[7] = np.nan  # an unreadable sample marked valid must not count either
    samples = ImageSet(images, features, {}, {"valid": valid})
    assert rejected_samples(task, samples, 0.03)[:, 0, 0].tolist() == [4, 6]
    assert rejected_samples(task, samples, 0.06).shape == (0, 16, 16)


def test_held_out_split_is_disjoint_sized_and_keeps_one_for_training():
    positives = np.arange(20, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), dtype=np.uint8)
    negatives = positives[:1] + 100
    data = split_held_out(positives, negatives, 0.25, seed=3)
    assert len(data.held_out_positives) == 5 and len(data.positives) == 15
    assert sorted(np.concatenate([data.positives, data.held_out_positives])[:, 0, 0]) == list(range(20))
    assert len(data.own_negatives) == 1 and len(data.held_out_negatives) == 0


def test_synthetic_negatives_break_the_rule_by_a_delta_in_range():
    task = get_registry().task("bars")
    images = synthetic_negatives(task, np.random.default_rng(0), 40, 32, (0.04, 0.08))
    assert images.dtype == np.uint8 and images.shape == (40, 32, 32)
    residual = np.abs(task.residual(task.measure(images)))
    assert residual.min() > 0.035 and residual.max() < 0.085
    # Chunks of images share a δ, but the batch mixes several.
    assert np.ptp(residual) > 0.01


def test_batches_are_half_positive_and_draw_negatives_as_configured():
    task = get_registry().task("bars")
    positives, own = rendered(task, 0, 10), rendered(task, 1, 6, delta=0.1)
    data = ClassifierData(positives, own, positives[:0], own[:0])
    images, labels = training_batch(task, data, params_with(synthetic_fraction=0.0, batch_size=16).classifier, step=0)
    assert labels.tolist() == [1.0] * 8 + [0.0] * 8
    flat = lambda array: {image.tobytes() for image in array}  # noqa: E731
    assert flat(images[:8]) <= flat(positives) and flat(images[8:]) <= flat(own)
    images, _ = training_batch(task, data, params_with(synthetic_fraction=1.0, batch_size=16).classifier, step=0)
    assert not flat(images[8:]) & flat(own)


def test_own_negatives_are_required_unless_every_negative_is_synthetic():
    task = get_registry().task("bars")
    params = params_with(synthetic_fraction=0.5, reject_threshold=0.04)
    with pytest.raises(RulekitError, match=r"classifier.reject_threshold \(0.04\).*classifier.synthetic_fraction"):
        train_rule_classifier(task, process_of(params), synthetic_only_data(task), params.classifier)


def fake_model_and_samples(root, params):
    """A freshly initialised model folder and a measured sample set, without training anything."""
    task = get_registry().task("bars")
    family = get_registry().get("model", MODEL)
    folder = root / "models" / "bars" / MODEL
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    family.save_network(family.build_network(params.network, 16), folder)
    info = {"model": MODEL, "size": 16, "model_settings": params.train_settings_for(MODEL).model_dump()}
    (folder / MODEL_INFO_FILE).write_text(json.dumps(info))
    images = np.concatenate([rendered(task, 5, 6), rendered(task, 6, 10, delta=0.08)])
    features = task.measure(images)
    valid = task.valid(images, features).astype(np.uint8)
    write_image_set(root / "samples" / "bars" / MODEL / "none", ImageSet(images, features, {}, {"valid": valid}), 4)


def test_stage_writes_classifier_metrics_table_and_figure(tmp_path):
    params = params_with(synthetic_fraction=0.5, eval_levels=[0.0, 0.3], eval_deltas=[0.02, 0.05])
    generate("bars", params, tmp_path / "data" / "bars")
    paths = default_paths("bars", MODEL, tmp_path)
    with pytest.raises(DataFileError, match=f"{paths.model / MODEL_INFO_FILE} does not exist.*rulekit train bars --model {MODEL}"):
        train_classifier("bars", MODEL, params, paths)
    fake_model_and_samples(tmp_path, params)

    summary = train_classifier("bars", MODEL, params, paths)
    assert summary["n_own_negatives"] + summary["n_held_out_negatives"] == 10
    assert summary["n_positives"] == 48 and summary["headline"]["level"] == 0.0
    metrics = json.loads(paths.metrics.read_text())
    assert set(metrics["auc_own_samples"]) == {"level_0", "level_0.3"}
    assert set(metrics["auc_synthetic"]["level_0.3"]) == {"delta_0.02", "delta_0.05"}
    table = paths.table.read_text().splitlines()
    assert table[0] == ",".join(COLUMNS) and len(table) == 1 + 2 + 4
    assert table[1].startswith("own-samples,,0.0,")
    assert paths.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = load_classifier(paths.classifier)
    assert loaded.config == {"size": 16, "channels": [8, 16], "hidden": 16}
    info = json.loads((paths.classifier / CONFIG_FILE).read_text())["info"]
    assert info["task"] == "bars" and info["classifier"]["steps"] == params.classifier.steps


def test_stage_names_the_missing_samples_and_the_command_that_makes_them(tmp_path):
    params = params_with()
    generate("bars", params, tmp_path / "data" / "bars")
    fake_model_and_samples(tmp_path, params)
    paths = default_paths("bars", MODEL, tmp_path)
    (paths.samples / "data.safetensors").unlink()
    with pytest.raises(DataFileError, match=f"{paths.samples / 'data.safetensors'} does not exist.*rulekit sample bars --model {MODEL}"):
        train_classifier("bars", MODEL, params, paths)
