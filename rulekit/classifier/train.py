"""Training and held-out evaluation of the rule classifier, as pure functions.

Positives are the training images. Negatives are of two kinds, as in the paper's contrastive
classifier: the model's own valid samples whose measured fine-rule residual is large (the
mistakes the model actually makes), and synthetic violations, rule-abiding features moved off
the rule by a random δ and rendered like the data. Every image is noised by the model's own
process to a random level, so guidance later sees exactly what the model sees while sampling.

Every random draw comes from generators seeded by ``ClassifierParams.seed`` and the step, so the
same inputs give bit-identical weights on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rulekit.classifier.network import RuleClassifier, build_classifier
from rulekit.dataset import ImageSet, to_model_range, to_uint8
from rulekit.errors import RulekitError
from rulekit.params import ClassifierParams
from rulekit.progress import progress_bar
from rulekit.training import seed_for

#: Synthetic negatives share one δ per chunk of this many images: ``Task.violate`` takes one δ
#: per call, and a chunk keeps the calls few while every batch still mixes many δs.
SYNTHETIC_CHUNK = 8
#: Images per forward pass during evaluation; bounds memory, not results.
EVAL_BATCH = 512
#: The final loss reported is the mean over this last share of the steps (at least one step).
FINAL_LOSS_SHARE = 0.1


@dataclass(frozen=True)
class ClassifierData:
    """The uint8 images (n, S, S) the classifier trains on and the ones held out from it."""

    positives: np.ndarray
    own_negatives: np.ndarray
    held_out_positives: np.ndarray
    held_out_negatives: np.ndarray

    @property
    def size(self) -> int:
        return int(self.positives.shape[-1])


@dataclass
class TrainedClassifier:
    """A trained classifier, its loss at every step and the seconds training took."""

    classifier: RuleClassifier
    losses: list[float]
    seconds: float

    @property
    def final_loss(self) -> float:
        tail = max(1, int(len(self.losses) * FINAL_LOSS_SHARE))
        return float(np.mean(self.losses[-tail:]))


def _value_key(value: float) -> int:
    # Keyed by value, not position, so one δ's or level's draws do not depend on the others listed.
    return int(round(value * 1e9))


def rejected_samples(task, samples: ImageSet, reject_threshold: float) -> np.ndarray:
    """The model's valid samples whose measured |residual| exceeds ``reject_threshold``.

    Invalid samples are left out: the measurer could not read them, so nothing says whether
    they break the fine rule.
    """
    valid = samples.extras["valid"].astype(bool)
    residual = np.full(len(valid), np.nan)
    residual[valid] = task.residual(samples.features[valid])
    with np.errstate(invalid="ignore"):
        rejected = valid & (np.abs(residual) > reject_threshold)
    return samples.images[rejected]


def split_held_out(positives: np.ndarray, negatives: np.ndarray, holdout_fraction: float, seed: int) -> ClassifierData:
    """Hold out ``holdout_fraction`` of each set at random; at least one image of a non-empty set
    stays for training."""
    rng = np.random.default_rng(seed_for(seed, "holdout"))

    def split(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(len(images))
        n_held = min(int(round(len(images) * holdout_fraction)), max(len(images) - 1, 0))
        return images[order[n_held:]], images[order[:n_held]]

    train_positives, held_positives = split(positives)
    train_negatives, held_negatives = split(negatives)
    return ClassifierData(train_positives, train_negatives, held_positives, held_negatives)


def synthetic_negatives(task, rng: np.random.Generator, n: int, size: int, deltas: tuple[float, float]) -> np.ndarray:
    """``n`` uint8 images of rule-abiding features moved off the fine rule by δ ~ U[deltas]."""
    features = task.sample(rng, n)
    low, high = deltas
    chunks = [
        task.violate(features[start : start + SYNTHETIC_CHUNK], float(rng.uniform(low, high)), rng)
        for start in range(0, n, SYNTHETIC_CHUNK)
    ]
    violating = np.concatenate(chunks) if chunks else features
    return to_uint8(task.render(violating, size))


def _check_data(data: ClassifierData, settings: ClassifierParams) -> None:
    if len(data.positives) == 0:
        raise RulekitError("the rule classifier has no training images to use as positives")
    if settings.synthetic_fraction < 1.0 and len(data.own_negatives) == 0:
        raise RulekitError(
            f"no own samples to train on as negatives: no valid sample of the model has |residual| above "
            f"classifier.reject_threshold ({settings.reject_threshold}); lower it, or set "
            f"classifier.synthetic_fraction to 1 (now {settings.synthetic_fraction}) to train on synthetic violations only"
        )


def training_batch(task, data: ClassifierData, settings: ClassifierParams, step: int) -> tuple[np.ndarray, torch.Tensor]:
    """One step's uint8 images and labels: half positives, half negatives, each negative synthetic with
    probability ``synthetic_fraction``; labels 1 for positives."""
    rng = np.random.default_rng(seed_for(settings.seed, "batch", step))
    n_positive = settings.batch_size // 2
    n_negative = settings.batch_size - n_positive
    n_synthetic = int((rng.random(n_negative) < settings.synthetic_fraction).sum())
    positives = data.positives[rng.integers(0, len(data.positives), n_positive)]
    # With no own negatives every negative is synthetic (``_check_data``), so none is drawn here;
    # the bound of 1 only keeps ``integers`` from refusing an empty range.
    own = data.own_negatives[rng.integers(0, max(len(data.own_negatives), 1), n_negative - n_synthetic)]
    synthetic = synthetic_negatives(task, rng, n_synthetic, data.size, tuple(settings.synthetic_deltas))
    images = np.concatenate([positives, own, synthetic])
    labels = torch.cat([torch.ones(n_positive), torch.zeros(n_negative)])
    return images, labels


def train_rule_classifier(
    task, process, data: ClassifierData, settings: ClassifierParams, label: str = "train-classifier"
) -> TrainedClassifier:
    """Train a classifier for ``settings.steps`` AdamW steps (cosine-decayed learning rate) on
    images noised by ``process`` to levels uniform in [0, ``max_level``]."""
    _check_data(data, settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(settings.seed, "init"))
        classifier = build_classifier(data.size, list(settings.channels), settings.hidden)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps)
    losses: list[float] = []
    classifier.train()
    started = time.perf_counter()
    with progress_bar(label, settings.steps) as progress:
        for step in range(settings.steps):
            images, labels = training_batch(task, data, settings, step)
            generator = torch.Generator().manual_seed(seed_for(settings.seed, "noise", step))
            levels = torch.rand(len(images), generator=generator) * settings.max_level
            noisy, _ = process.noised(to_model_range(images), levels, generator)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(classifier(noisy, levels), labels)
            if not torch.isfinite(loss):
                raise RulekitError(f"the rule classifier's loss became non-finite at step {step + 1}; lower classifier.learning_rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if (step + 1) % 10 == 0:
                progress.update(0, status=f"loss {np.mean(losses[-10:]):.4f}")
            progress.advance(0)
    classifier.eval()
    return TrainedClassifier(classifier, losses, time.perf_counter() - started)


def classifier_logits(classifier: RuleClassifier, process, images: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Logits of uint8 images noised by ``process`` to ``level`` with noise seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    logits = []
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            noisy, _ = process.noised(to_model_range(images[start : start + EVAL_BATCH]), float(level), generator)
            logits.append(classifier(noisy, torch.full((len(noisy),), float(level))).numpy())
    return np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)


def _row(source: str, delta: float | None, level: float, positive: np.ndarray, negative: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([positive, negative]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    return {
        "source": source,
        "delta": delta,
        "level": float(level),
        "auc": float(roc_auc_score(labels, scores)),
        "accuracy": float(np.mean((scores > 0) == (labels == 1))),
        "n": int(len(labels)),
    }


def evaluate_classifier(classifier: RuleClassifier, task, process, data: ClassifierData, settings: ClassifierParams) -> list[dict]:
    """Held-out ROC AUC and accuracy (logit > 0 means "keeps the rule") at each of ``eval_levels``.

    Rows with ``source`` "own-samples" tell held-out data from held-out rejected samples (up to
    ``n_eval_per_class`` of each; left out when either has fewer than 2); rows with ``source``
    "synthetic" tell fresh rule-abiding renders from fresh renders that break the rule by each of
    ``eval_deltas``, drawn apart from everything seen in training. Keys: source, delta (None for
    own samples), level, auc, accuracy, n.
    """
    rows = []
    per_class = settings.n_eval_per_class
    positives, negatives = data.held_out_positives[:per_class], data.held_out_negatives[:per_class]
    if min(len(positives), len(negatives)) >= 2:
        for level in settings.eval_levels:
            seed = seed_for(settings.seed, "eval-own", _value_key(level))
            rows.append(
                _row(
                    "own-samples",
                    None,
                    level,
                    classifier_logits(classifier, process, positives, level, seed),
                    classifier_logits(classifier, process, negatives, level, seed + 1),
                )
            )
    for delta in settings.eval_deltas:
        rng = np.random.default_rng(seed_for(settings.seed, "eval-synthetic", _value_key(delta)))
        abiding = to_uint8(task.render(task.sample(rng, per_class), data.size))
        # Drawn apart from the abiding rows, so the classifier cannot win by comparing twins.
        violating = to_uint8(task.render(task.violate(task.sample(rng, per_class), float(delta), rng), data.size))
        for level in settings.eval_levels:
            seed = seed_for(settings.seed, "eval-noise", _value_key(delta), _value_key(level))
            rows.append(
                _row(
                    "synthetic",
                    float(delta),
                    level,
                    classifier_logits(classifier, process, abiding, level, seed),
                    classifier_logits(classifier, process, violating, level, seed + 1),
                )
            )
    return rows
