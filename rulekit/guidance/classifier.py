"""``classifier``: classifier guidance with the contrastive rule classifier (the paper's remedy)."""

from __future__ import annotations

from pydantic import Field

from rulekit.guidance.base import Guidance, GuidedRun
from rulekit.hookspecs import hookimpl
from rulekit.params import Section


class ClassifierGuidanceSettings(Section):
    """How strongly the classifier steers."""

    scale: float = Field(ge=0, description="w: the classifier's ∇ log p(rule | x_t) is multiplied by w")


class ClassifierScore(GuidedRun):
    """Adds ``scale`` × ∇ₓ log σ(classifier(x_t, level)) to the model's score at every step."""

    def __init__(self, classifier, scale: float) -> None:
        self.classifier = classifier
        self.scale = scale

    def score(self, x, time, prediction, process):
        import torch
        import torch.nn.functional as F

        if self.scale == 0.0:
            # w = 0 is unguided sampling bit for bit, in every parameterisation: adding a zero
            # score would still round differently through a v-prediction's conversions.
            return None
        level = torch.full((x.shape[0],), process.level(time), dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            tracked = x.detach().requires_grad_(True)
            log_p = F.logsigmoid(self.classifier(tracked, level)).sum()
            (gradient,) = torch.autograd.grad(log_p, tracked)
        return self.scale * gradient

    def describe(self) -> str:
        return f"scale {self.scale:g}"


class ClassifierGuidance(Guidance):
    name = "classifier"
    description = (
        "Classifier guidance (the paper's remedy): adds w × the gradient of log p(rule holds | x_t) from "
        "the contrastive rule classifier; knows the rule only through that classifier."
    )
    prior_knowledge = "a learned classifier, whose negatives a pixel-space check of the rule chose"
    settings = ClassifierGuidanceSettings
    needs_classifier = True

    def prepare(self, settings, context):
        return ClassifierScore(context.classifier(self.name), settings.scale)


@hookimpl
def rulekit_guidance() -> list[Guidance]:
    return [ClassifierGuidance()]
