"""``filter-rule`` and ``filter-classifier``: draw k times more samples and keep the best ranked.

Filtering changes no sampling step, so every drawn image is an ordinary sample of the model; what
a filter can reach is bounded by what the model already draws, k times over.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from rulekit.dataset import to_model_range, to_uint8
from rulekit.guidance.base import Guidance, GuidedRun, top_indices
from rulekit.hookspecs import hookimpl
from rulekit.params import Section


class FilterSettings(Section):
    """How many images a filter draws per image it keeps."""

    oversample: int = Field(ge=1, le=1000, description="k: images drawn per image kept")


class RuleFilterRun(GuidedRun):
    """Keeps the valid samples whose measured residual is smallest."""

    def __init__(self, task, oversample: int) -> None:
        self.task = task
        self.oversample = oversample

    def select(self, images, keep):
        # Measured as the stage stores them, so the kept ranking is the one evaluation sees.
        stored = to_uint8(images)
        features = self.task.measure(stored)
        valid = self.task.valid(stored, features)
        with np.errstate(invalid="ignore"):
            closeness = -np.abs(self.task.residual(features))
        return top_indices(np.where(valid, closeness, -np.inf), keep)

    def describe(self) -> str:
        return f"oversample {self.oversample}"


class ClassifierFilterRun(GuidedRun):
    """Keeps the samples the rule classifier scores most likely to obey the rule, on clean images."""

    def __init__(self, classifier, oversample: int) -> None:
        self.classifier = classifier
        self.oversample = oversample

    def select(self, images, keep):
        import torch

        clean = to_model_range(np.asarray(images, dtype=np.float32))
        with torch.no_grad():
            logits = torch.cat(
                [self.classifier(batch, torch.zeros(len(batch))) for batch in clean.split(FILTER_BATCH)]
            )
        return top_indices(logits.double().numpy(), keep)

    def describe(self) -> str:
        return f"oversample {self.oversample}"


#: Images per classifier forward pass while filtering; bounds memory, not results.
FILTER_BATCH = 512


class RuleFilter(Guidance):
    name = "filter-rule"
    description = (
        "The paper's pixel-space filter at sampling time: draws k times more and keeps the samples whose "
        "measured residual is smallest; an oracle, it knows the rule exactly."
    )
    prior_knowledge = "the exact rule and its measurer (an oracle)"
    settings = FilterSettings

    def prepare(self, settings, context):
        return RuleFilterRun(context.task, settings.oversample)


class ClassifierFilter(Guidance):
    name = "filter-classifier"
    description = (
        "Draws k times more and keeps the samples the contrastive rule classifier scores best; knows the "
        "rule only through that classifier."
    )
    prior_knowledge = "a learned classifier, whose negatives a pixel-space check of the rule chose"
    settings = FilterSettings
    needs_classifier = True

    def prepare(self, settings, context):
        return ClassifierFilterRun(context.classifier(self.name), settings.oversample)


@hookimpl
def rulekit_guidance() -> list[Guidance]:
    return [RuleFilter(), ClassifierFilter()]
