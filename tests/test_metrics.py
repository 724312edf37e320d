"""The built-in metrics and their bootstrap intervals: exact on constructed data, honest on rendered data."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from rulekit.dataset import to_uint8
from rulekit.errors import RulekitError
from rulekit.metrics import Metric, MetricInput, evaluate, evaluate_all
from rulekit.metrics.coverage import Coverage
from rulekit.metrics.memorisation import Memorisation, nearest_distances
from rulekit.metrics.rule import CoarseAccuracy, FineConformity, Residual, ResidualBand, Validity
from rulekit.registry import BUILTIN_PLUGINS, Registry, get_registry

from conftest import BUILTIN_TASKS, rng

METRIC_PLUGINS = ("rulekit.metrics.rule", "rulekit.metrics.coverage", "rulekit.metrics.memorisation")
ALL_METRICS = [Validity(), CoarseAccuracy(), Residual(), FineConformity(), ResidualBand(), Coverage(), Memorisation()]
SIZE = 16


def make_input(task, features, valid=None, reference_features=None, images=None, reference_images=None):
    """A MetricInput whose images are blank unless given; the reference defaults to fresh rule-abiding rows."""
    features = np.asarray(features, dtype=np.float64)
    valid = np.all(np.isfinite(features), axis=1) if valid is None else np.asarray(valid, dtype=bool)
    if reference_features is None:
        reference_features = task.sample(rng(99), 64)
    if images is None:
        images = np.zeros((len(features), SIZE, SIZE), dtype=np.uint8)
    if reference_images is None:
        reference_images = np.zeros((len(reference_features), SIZE, SIZE), dtype=np.uint8)
    return MetricInput(task, images, features, valid, reference_images, np.asarray(reference_features, dtype=float))


def full(metric, data):
    return metric.compute(data, np.arange(data.n))


@pytest.fixture
def bars():
    return get_registry().task("bars")


# ---- rule metrics on hand-made bars features (b = 0.5 a + 0.2, so b = 0.4 + r at a = 0.4) -----

RESIDUALS = np.array([0.003, -0.007, 0.015, -0.03, 0.08])


@pytest.fixture
def known_residuals(bars):
    rows = np.stack([np.full(len(RESIDUALS), 0.4), 0.4 + RESIDUALS], axis=1)
    invalid = np.full((2, 2), np.nan)
    return make_input(bars, np.concatenate([rows, invalid]))


def test_validity_counts_every_sample(known_residuals):
    assert full(Validity(), known_residuals) == {"validity": pytest.approx(5 / 7, abs=1e-15)}


def test_fine_conformity_is_exact_at_each_tolerance(known_residuals):
    assert full(FineConformity(), known_residuals) == {
        "fine_conformity_0.5pct": 1 / 5,
        "fine_conformity_1pct": 2 / 5,
        "fine_conformity_2pct": 3 / 5,
        "fine_conformity_5pct": 4 / 5,
    }


def test_mean_and_median_abs_residual_are_exact(known_residuals):
    result = full(Residual(), known_residuals)
    assert result["mean_abs_residual"] == pytest.approx(0.027, abs=1e-12)
    assert result["median_abs_residual"] == pytest.approx(0.015, abs=1e-12)


def test_coarse_accuracy_judges_only_valid_samples(bars):
    features = [
        [0.2, 0.3],  # a < 0.4: the right bar must be taller, and is
        [0.2, 0.15],  # ... and is not
        [0.6, 0.5],  # a > 0.4: the right bar must be shorter, and is
        [0.6, 0.7],  # ... and is not
        [0.42, 0.5],  # within 0.02 of the rule's crossing: either order keeps the rule
        [0.5, 0.6],  # the rule's gap is 0.05 here, so the order matters again: broken
        [0.2, 0.3],  # keeps the rule, but the measurer rejected the sample
        [np.nan, np.nan],
    ]
    valid = [True, True, True, True, True, True, False, False]
    data = make_input(bars, features, valid)
    assert full(CoarseAccuracy(), data) == {"coarse_accuracy": 0.5}
    assert full(Validity(), data) == {"validity": 0.75}


def test_rule_metrics_are_nan_without_a_valid_sample(bars):
    data = make_input(bars, np.full((4, 2), np.nan))
    for metric in (CoarseAccuracy(), Residual(), FineConformity(), Coverage()):
        assert all(math.isnan(value) for value in full(metric, data).values())
    assert full(Validity(), data) == {"validity": 0.0}
    band = full(ResidualBand(), data)
    assert math.isnan(band["residual_std"]) and math.isnan(band["band_ratio"])
    assert band["data_residual_std"] == 0.0  # the reference is still judged: exact features, no spread


# ---- residual band ------------------------------------------------------------------------------


def with_residuals(bars, a, residual):
    return np.stack([a, bars.rule(a) + residual], axis=1)


def test_band_is_measured_against_the_reference_spread(bars):
    generator = rng(1)
    a = generator.uniform(0.25, 0.75, 300)
    reference_residual = generator.normal(0.0, 0.01, 300)
    reference = with_residuals(bars, a, reference_residual)
    data = make_input(bars, with_residuals(bars, a, 3.0 * reference_residual), reference_features=reference)
    result = full(ResidualBand(), data)
    assert result["data_residual_std"] == pytest.approx(np.std(bars.residual(reference)), rel=1e-12)
    low, high = np.percentile(bars.residual(reference), [5, 95])
    assert result["data_residual_p90_width"] == pytest.approx(high - low, rel=1e-12)
    assert result["band_ratio"] == pytest.approx(3.0, rel=1e-9)
    assert result["residual_p90_width"] == pytest.approx(3.0 * (high - low), rel=1e-9)


def test_reference_band_is_fixed_across_resamples(bars):
    generator = rng(2)
    reference = with_residuals(bars, generator.uniform(0.25, 0.75, 200), generator.normal(0.0, 0.01, 200))
    data = make_input(bars, bars.sample(generator, 50), reference_features=reference)
    estimates = evaluate(ResidualBand(), data, n_resamples=200)
    for key in ("data_residual_std", "data_residual_p90_width"):
        assert estimates[key].low == estimates[key].value == estimates[key].high


def test_band_ratio_is_undefined_against_a_reference_with_no_spread(bars):
    data = make_input(bars, with_residuals(bars, np.array([0.3, 0.5, 0.6]), np.array([0.01, -0.01, 0.0])))
    result = full(ResidualBand(), data)
    assert result["data_residual_std"] == 0.0 and math.isnan(result["band_ratio"])
    assert result["residual_std"] == pytest.approx(np.std([0.01, -0.01, 0.0]), abs=1e-15)


# ---- coverage ---------------------------------------------------------------------------------


def test_identical_sets_are_at_distance_zero(bars):
    reference = bars.sample(rng(3), 200)
    result = full(Coverage(), make_input(bars, reference.copy(), reference_features=reference))
    assert result == {"wasserstein_a": 0.0, "wasserstein_b": 0.0, "wasserstein_mean": 0.0}


def test_a_shift_in_one_feature_is_its_distance(bars):
    reference = bars.sample(rng(4), 200)
    shifted = reference + np.array([0.0, 0.037])
    result = full(Coverage(), make_input(bars, shifted, reference_features=reference))
    assert result["wasserstein_a"] == pytest.approx(0.0, abs=1e-12)
    assert result["wasserstein_b"] == pytest.approx(0.037, abs=1e-9)
    assert result["wasserstein_mean"] == pytest.approx(0.037 / 2, abs=1e-9)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_a_collapsed_model_covers_worse_than_a_matched_one(name):
    task = get_registry().task(name)
    reference = task.sample(rng(5), 1000)
    matched = full(Coverage(), make_input(task, task.sample(rng(6), 200), reference_features=reference))
    one_configuration = np.repeat(task.sample(rng(7), 1), 200, axis=0)
    collapsed = full(Coverage(), make_input(task, one_configuration, reference_features=reference))
    assert collapsed["wasserstein_mean"] > 3 * matched["wasserstein_mean"]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), m=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_coverage_on_any_resample_equals_scipy(n, m, seed):
    task = get_registry().task("bars")
    generator = rng(seed)
    # Rounded values make ties between and within the two sets common.
    features = np.round(generator.uniform(0, 1, (n, 2)), 1)
    valid = generator.random(n) < 0.7
    features[~valid] = np.nan
    reference = np.round(generator.uniform(0, 1, (m, 2)), 1)
    data = make_input(task, features, valid, reference_features=reference)
    index = generator.integers(0, n, n)
    result = Coverage().compute(data, index)
    kept = features[index[valid[index]]]
    for column, feature in enumerate(task.feature_names):
        if len(kept):
            expected = wasserstein_distance(kept[:, column], reference[:, column])
            assert result[f"wasserstein_{feature}"] == pytest.approx(expected, abs=1e-12)
        else:
            assert math.isnan(result[f"wasserstein_{feature}"])


# ---- memorisation -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror_training():
    task = get_registry().task("mirror")
    features = task.sample(rng(8), 512)
    return task, features, to_uint8(task.render(features, SIZE))


def against(task, features, images, training_features, training_images, valid=None):
    """A MetricInput of generated ``images`` judged against the given training data."""
    return make_input(task, features, valid, training_features, images, training_images)


def test_copies_of_training_images_are_memorised(mirror_training):
    task, features, images = mirror_training
    copied = rng(9).choice(len(images), 100)
    data = against(task, features[copied], images[copied], features, images)
    result = full(Memorisation(), data)
    assert result["nn_distance_median"] == 0.0
    assert result["memorised_fraction"] == 1.0
    assert result["data_nn_distance_median"] > 0.0


def test_fresh_renders_are_mostly_not_memorised(mirror_training):
    task, features, images = mirror_training
    fresh = task.sample(rng(10), 200)
    data = against(task, fresh, to_uint8(task.render(fresh, SIZE)), features, images)
    result = full(Memorisation(), data)
    assert result["memorised_fraction"] < 0.3
    assert result["nn_distance_median"] > 0.5 * result["data_nn_distance_median"]
    # New draws from the data distribution sit under the threshold about as often as the training data does.
    assert abs(result["memorised_fraction"] - result["data_memorised_fraction"]) < 0.15


def test_duplicates_in_the_training_data_do_not_shrink_its_scale(mirror_training):
    task, features, images = mirror_training
    doubled, doubled_features = np.concatenate([images, images]), np.concatenate([features, features])
    result = full(Memorisation(), against(task, features[:10], images[:10], doubled_features, doubled))
    single = full(Memorisation(), against(task, features[:10], images[:10], features, images))
    assert result["data_nn_distance_median"] > 0.0
    assert result["data_memorised_fraction"] == 1.0
    assert single["data_memorised_fraction"] < 0.3


@settings(max_examples=25, deadline=None)
@given(q=st.integers(1, 12), m=st.integers(1, 12), size=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_blocked_nearest_distances_equal_brute_force(q, m, size, seed):
    generator = rng(seed)
    reference = generator.integers(0, 256, (m, size, size), dtype=np.uint8)
    copies = reference[generator.integers(0, m, q // 2)]
    queries = np.concatenate([copies, generator.integers(0, 256, (q - q // 2, size, size), dtype=np.uint8)])
    exclude = generator.integers(0, m, q)
    difference = queries[:, None].astype(float) / 255 - reference[None].astype(float) / 255
    pairwise = np.sqrt(np.mean(difference**2, axis=(2, 3)))
    pairwise[np.arange(q), exclude] = np.inf
    nearest, nearest_distinct = nearest_distances(queries, reference, exclude, block_elements=7)
    expected = pairwise.min(axis=1)
    expected_distinct = np.where(pairwise > 0, pairwise, np.inf).min(axis=1)
    for found, wanted in ((nearest, expected), (nearest_distinct, expected_distinct)):
        np.testing.assert_allclose(found, np.where(np.isinf(wanted), np.nan, wanted), atol=1e-12)


# ---- rule metrics on rendered and measured data ---------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_measured_data_keeps_the_rules_and_violations_are_seen(name):
    task = get_registry().task(name)
    generator = rng(11)
    clean = task.sample(generator, 100)
    broken = task.violate(task.sample(generator, 100), 0.03, generator)
    for features, within_half_pct, within_2pct, within_5pct in ((clean, 1.0, 1.0, 1.0), (broken, 0.0, 0.0, 1.0)):
        images = to_uint8(task.render(features, 32))
        measured = task.measure(images)
        data = against(task, measured, images, measured, images, valid=task.valid(images, measured))
        result = {**full(Validity(), data), **full(FineConformity(), data)}
        assert result["validity"] == 1.0
        assert result["fine_conformity_0.5pct"] == within_half_pct
        assert result["fine_conformity_2pct"] == within_2pct
        assert result["fine_conformity_5pct"] == within_5pct
    assert full(Residual(), data)["mean_abs_residual"] == pytest.approx(0.03, abs=0.002)


# ---- bootstrap --------------------------------------------------------------------------------


def test_intervals_cover_the_true_value_at_about_their_confidence(bars):
    features = bars.sample(rng(12), 400)
    covered = 0
    for seed in range(40):
        valid = rng(seed).random(400) < 0.3
        estimate = evaluate(Validity(), make_input(bars, features, valid), n_resamples=500, seed=seed)["validity"]
        covered += estimate.low <= 0.3 <= estimate.high
    assert covered >= 34


def test_an_interval_collapses_when_every_sample_is_the_same(bars):
    features = np.repeat([[0.4, 0.41]], 50, axis=0)
    estimates = evaluate_all([Validity(), FineConformity(), Residual()], make_input(bars, features), n_resamples=100)
    for estimate in estimates.values():
        assert estimate.low == estimate.value == estimate.high
    assert estimates["mean_abs_residual"].value == pytest.approx(0.01, abs=1e-12)


def test_same_seed_same_intervals_and_the_point_value_is_the_full_sample(bars):
    generator = rng(13)
    noisy = bars.violate(bars.sample(generator, 200), 0.01, generator) + generator.normal(0, 0.01, (200, 2))
    data = make_input(bars, noisy)
    first = evaluate_all(ALL_METRICS, data, n_resamples=200, seed=5)
    second = evaluate_all(ALL_METRICS, data, n_resamples=200, seed=5)
    other = evaluate_all(ALL_METRICS, data, n_resamples=200, seed=6)
    assert first == second
    assert first["mean_abs_residual"] != other["mean_abs_residual"]
    for metric in ALL_METRICS:
        for key, value in full(metric, data).items():
            assert first[key].value == value or (math.isnan(value) and math.isnan(first[key].value))
    for estimate in first.values():
        assert not estimate.low > estimate.high


def test_resamples_with_no_valid_sample_are_left_out_of_the_interval(bars):
    # With one valid sample in three, about 30 % of resamples hold no valid sample.
    data = make_input(bars, [[0.2, 0.3], [np.nan, np.nan], [np.nan, np.nan]])
    estimates = evaluate_all([CoarseAccuracy(), Validity()], data, n_resamples=300)
    assert (estimates["coarse_accuracy"].low, estimates["coarse_accuracy"].high) == (1.0, 1.0)
    assert estimates["validity"].low == 0.0 and estimates["validity"].high == 1.0


def test_no_valid_sample_gives_nan_values_and_intervals(bars):
    estimate = evaluate(Residual(), make_input(bars, np.full((5, 2), np.nan)), n_resamples=50)["median_abs_residual"]
    assert math.isnan(estimate.value) and math.isnan(estimate.low) and math.isnan(estimate.high)


def test_two_metrics_producing_one_name_are_an_error(bars):
    with pytest.raises(RulekitError, match="'validity'"):
        evaluate_all([Validity(), Validity()], make_input(bars, bars.sample(rng(), 5)), n_resamples=5)


def test_a_metric_that_changes_its_names_between_resamples_is_an_error(bars):
    class Fickle(Metric):
        name = "fickle"
        description = "Names its number after the first index."

        def compute(self, data, index):
            return {f"first_{index[0]}": 0.0}

    with pytest.raises(RulekitError, match="fickle"):
        evaluate(Fickle(), make_input(bars, bars.sample(rng(), 50)), n_resamples=20)


@pytest.mark.parametrize("arguments", [{"n_resamples": 0}, {"confidence": 1.0}, {"confidence": 0.0}])
def test_bad_bootstrap_settings_are_rejected(bars, arguments):
    with pytest.raises(RulekitError):
        evaluate(Validity(), make_input(bars, bars.sample(rng(), 5)), **arguments)


# ---- input checks and registration ------------------------------------------------------------


def test_inputs_are_checked_once(bars):
    features = bars.sample(rng(), 4)
    with pytest.raises(RulekitError, match="uint8"):
        make_input(bars, features, images=np.zeros((4, SIZE, SIZE), dtype=np.float32))
    with pytest.raises(RulekitError, match="finite"):
        make_input(bars, np.full((4, 2), np.nan), valid=np.ones(4, dtype=bool))
    with pytest.raises(RulekitError, match="shape"):
        make_input(bars, features[:, :1])
    with pytest.raises(RulekitError, match="size"):
        make_input(bars, features, reference_images=np.zeros((64, 8, 8), dtype=np.uint8))


def test_built_in_metrics_register_cleanly():
    registry = Registry(use_entry_points=False)
    assert set(METRIC_PLUGINS) <= set(BUILTIN_PLUGINS)
    assert registry.failures == []
    assert registry.names("metric") == sorted(metric.name for metric in ALL_METRICS)
