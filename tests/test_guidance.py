"""Guidance strategies: each samples with either family, and each keeps its promise."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rulekit import cli
from rulekit.classifier.network import build_classifier, save_classifier
from rulekit.dataset import to_uint8
from rulekit.errors import RulekitError
from rulekit.guidance.base import GuidanceContext, top_indices
from rulekit.params import parse_params
from rulekit.registry import get_registry, reset_registry
from rulekit.sampling import SamplingDiverged, sample_images

from conftest import smoke_params, write_params

STRATEGIES = ("none", "classifier", "filter-classifier", "filter-rule", "rule-gradient")
SETTINGS = {
    "none": {},
    "classifier": {"scale": 2.0},
    "filter-classifier": {"oversample": 3},
    "filter-rule": {"oversample": 3},
    "rule-gradient": {"scale": 1.0, "through_network": False},
}


def guided_params(**settings):
    return parse_params(smoke_params(guidance=list(STRATEGIES), guidance_settings={**SETTINGS, **settings}))


def setup(model: str, tmp_path: Path, task: str = "bars", **settings):
    """Params, an untrained network of the family and a saved untrained classifier, all seeded."""
    params = guided_params(**settings)
    registry = get_registry()
    family = registry.get("model", model)
    process = family.process(params.train_settings_for(model), params.sampler_settings_for(model))
    torch.manual_seed(0)
    network = family.build_network(params.network, 16)
    classifier_dir = tmp_path / "classifiers" / task / model
    save_classifier(build_classifier(16, [8, 16], 16), classifier_dir, {"task": task})
    context = GuidanceContext(task=registry.task(task), process=process, size=16, classifier_dir=classifier_dir)
    return params, process, network, context


def guided_run(name: str, params, context):
    return get_registry().get("guidance", name).prepare(params.guidance_settings_for(name), context)


def draw(process, network, run, n: int = 6, seed: int = 0, name: str = "none") -> np.ndarray:
    images, _ = sample_images(process, network, run, n, 16, 4, seed=seed, guidance_name=name)
    return images


def test_every_strategy_says_what_it_knows_of_the_rule():
    registry = get_registry()
    assert set(STRATEGIES) <= set(registry.names("guidance"))
    knowledge = {name: registry.get("guidance", name).prior_knowledge for name in STRATEGIES}
    assert knowledge["none"] == "none"
    assert "oracle" in knowledge["filter-rule"] and "oracle" in knowledge["rule-gradient"]
    assert "classifier" in knowledge["classifier"] and "classifier" in knowledge["filter-classifier"]


@pytest.mark.parametrize("model", ["ddpm-unet", "flow-unet"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_samples_finite_images_of_the_right_shape(tmp_path, model, name):
    params, process, network, context = setup(model, tmp_path)
    run = guided_run(name, params, context)
    images = draw(process, network, run, name=name)
    assert images.shape == (6, 16, 16) and images.dtype == np.float32
    assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0


@pytest.mark.parametrize("model", ["ddpm-unet", "flow-unet"])
def test_classifier_guidance_at_scale_zero_is_unguided_sampling_exactly(tmp_path, model):
    params, process, network, context = setup(model, tmp_path, classifier={"scale": 0.0})
    unguided = draw(process, network, guided_run("none", params, context))
    at_zero = draw(process, network, guided_run("classifier", params, context))
    np.testing.assert_array_equal(at_zero, unguided)
    params, process, network, context = setup(model, tmp_path, classifier={"scale": 50.0})
    steered = draw(process, network, guided_run("classifier", params, context))
    assert not np.array_equal(steered, unguided)


def test_rule_filter_keeps_the_samples_closest_to_the_rule():
    task = get_registry().task("bars")
    rng = np.random.default_rng(0)
    deltas = np.array([0.08, 0.0, 0.03, 0.12, 0.01, 0.05])
    features = np.concatenate([task.violate(task.sample(rng, 1), delta, rng) for delta in deltas])
    images = task.render(features, 16)
    images[3] = 0.0  # a blank image: the measurer finds nothing, so it must rank last
    run = guided_run("filter-rule", guided_params(), GuidanceContext(task, None, 16, Path("unused")))
    kept = run.select(images, 3)
    assert list(kept) == [1, 4, 2]
    assert list(run.select(images, 6))[-1] == 3


class DrawsTheseImages(torch.nn.Module):
    """A stand-in flow network whose samples are exactly ``images``, whatever the noise: its
    velocity (x − c) / t makes the clean estimate c at every step."""

    def __init__(self, images: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("clean", torch.from_numpy(images).unsqueeze(1) * 2 - 1)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the sampler reads the device from it

    def forward(self, x, timesteps):
        velocity = (x - self.clean) / (timesteps[0] / 1000.0)

        class Output:
            sample = velocity

        return Output()


def test_rule_filter_never_keeps_a_sample_further_from_the_rule_than_one_it_drops(tmp_path):
    params, process, _, context = setup("flow-unet", tmp_path)
    task = context.task
    rng = np.random.default_rng(2)
    deltas = [0.06, 0.0, 0.1, 0.02, 0.08, 0.04, 0.12, 0.01, 0.05, 0.09, 0.03, 0.07]
    features = np.concatenate([task.violate(task.sample(rng, 1), delta, rng) for delta in deltas])
    network = DrawsTheseImages(task.render(features, 16))
    unguided, _ = sample_images(process, network, guided_run("none", params, context), 12, 16, 12, seed=0)
    # filter-rule draws 3 × 4 = 12 from the same seeds, so the same 12 images, and keeps 4.
    kept, _ = sample_images(process, network, guided_run("filter-rule", params, context), 4, 16, 12, seed=0)
    drawn_distance = np.abs(task.residual(task.measure(to_uint8(unguided))))
    kept_distance = np.abs(task.residual(task.measure(to_uint8(kept))))
    np.testing.assert_allclose(drawn_distance, deltas, atol=1e-3)
    np.testing.assert_allclose(sorted(kept_distance), [0.0, 0.01, 0.02, 0.03], atol=1e-3)
    assert kept_distance.max() < np.sort(drawn_distance)[4]
    assert kept_distance.mean() < drawn_distance[:4].mean()


def test_top_indices_rank_non_finite_scores_last_and_keep_draw_order_in_ties():
    assert list(top_indices(np.array([0.5, np.nan, 0.9, 0.5, -np.inf]), 4)) == [2, 0, 3, 1]


def test_rule_gradient_score_points_toward_the_rule(tmp_path):
    params, process, _, context = setup("flow-unet", tmp_path, **{"rule-gradient": {"scale": 1.0, "through_network": False}})
    task = context.task
    rng = np.random.default_rng(1)
    violated = task.render(task.violate(task.sample(rng, 4), 0.06, rng), 16)
    # At time t with a zero velocity the clean estimate is x itself.
    x = torch.from_numpy(violated).unsqueeze(1) * 2 - 1
    prediction = process.predict(lambda x, t: type("Out", (), {"sample": torch.zeros_like(x)})(), x, 0.1)
    score = guided_run("rule-gradient", params, context).score(x, 0.1, prediction, process)
    before = task.soft_residual(((x.squeeze(1) + 1) / 2).clamp(0, 1)).abs()
    moved = x + 2e-3 * score / score.abs().amax(dim=(1, 2, 3), keepdim=True)
    after = task.soft_residual(((moved.squeeze(1) + 1) / 2).clamp(0, 1)).abs()
    assert (after < before).all(), (before, after)


def test_rule_gradient_needs_a_task_with_a_differentiable_measurer(tmp_path):
    params, process, _, _ = setup("flow-unet", tmp_path)
    registry = get_registry()
    if "tally" not in registry.names("task"):
        pytest.skip("the rulekit-tally example plugin is not installed")
    context = GuidanceContext(registry.task("tally"), process, 16, tmp_path)
    with pytest.raises(RulekitError, match="task 'tally' has none"):
        guided_run("rule-gradient", params, context)


def test_exploding_guidance_is_reported_with_its_step_and_scale(tmp_path):
    params, process, network, context = setup("flow-unet", tmp_path, classifier={"scale": 1e38})
    with pytest.raises(SamplingDiverged, match=r"guidance 'classifier' \(scale 1e\+38\) produced non-finite values at step 1 of 5"):
        draw(process, network, guided_run("classifier", params, context), name="classifier")


def run_cli_in(folder: Path, *args: str) -> tuple[int, str]:
    """Run ``rulekit ARGS`` in ``folder``; returns the exit code and what went to stderr."""
    import contextlib
    import io
    import os

    reset_registry()
    errors = io.StringIO()
    previous = Path.cwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(errors):
            cli.main(list(args))
    except SystemExit as done:
        return (done.code if isinstance(done.code, int) else 1), errors.getvalue()
    finally:
        os.chdir(previous)
    return 0, errors.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder with smoke data, a smoke model, its unguided samples and its rule classifier."""
    folder = tmp_path_factory.mktemp("guided")
    write_params(folder / "params.yaml", guidance=list(STRATEGIES), guidance_settings=SETTINGS)
    for args in (("generate", "bars"), ("train", "bars"), ("sample", "bars"), ("train-classifier", "bars")):
        code, errors = run_cli_in(folder, *args)
        assert code == 0, errors
    return folder


def test_evaluate_draws_with_each_strategy_and_records_its_settings(trained):
    import json

    for name in STRATEGIES:
        code, errors = run_cli_in(trained, "evaluate", "bars", "--guidance", name)
        assert code == 0, errors
        meta = json.loads((trained / "evaluation" / "bars" / "ddpm-unet" / name / "meta.json").read_text())
        assert meta["guidance_settings"] == SETTINGS[name]
        assert meta["n_samples"] == 8 and meta["seed"] == 1
        assert meta["n_drawn"] == 8 * SETTINGS[name].get("oversample", 1)
        metrics = json.loads((trained / "metrics" / "bars" / "ddpm-unet" / "guidance" / f"{name}.json").read_text())
        assert metrics["guidance"] == name and metrics["n_samples"] == 8


def test_guidance_without_a_trained_classifier_stops_before_sampling(tmp_path, trained):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    shutil.rmtree(folder / "classifiers")
    code, errors = run_cli_in(folder, "sample", "bars", "--guidance", "classifier")
    assert code == 2 and len(errors.strip().splitlines()) == 1, errors
    assert "needs a trained rule classifier" in errors and "rulekit train-classifier bars --model ddpm-unet" in errors
    assert not (folder / "samples" / "bars" / "ddpm-unet" / "classifier").exists()


def test_an_unknown_guidance_stops_with_the_known_ones(trained):
    code, errors = run_cli_in(trained, "evaluate", "bars", "--guidance", "prayer")
    assert code == 2 and "unknown guidance 'prayer'" in errors and "filter-rule" in errors


def test_exploding_guidance_writes_no_samples(tmp_path, trained):
    import shutil

    import yaml

    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["guidance_settings"]["classifier"]["scale"] = 1e38
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    target = folder / "evaluation" / "bars" / "ddpm-unet" / "classifier"
    before = sorted(path.name for path in target.iterdir()) if target.exists() else None
    code, errors = run_cli_in(folder, "evaluate", "bars", "--guidance", "classifier")
    assert code == 2 and "produced non-finite values at step" in errors and "scale 1e+38" in errors, errors
    assert (sorted(path.name for path in target.iterdir()) if target.exists() else None) == before
