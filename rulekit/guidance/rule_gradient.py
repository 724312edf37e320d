"""``rule-gradient``: steer sampling down the gradient of the task's own squared residual.

At each step the model's estimate of the clean image is measured by the task's differentiable
measurer (``Task.soft_residual``), and the gradient of the squared residual with respect to the
noisy image becomes the guidance score, in the style of diffusion posterior sampling. It knows
the rule exactly, so it is the upper reference for what gradient guidance can do.
"""

from __future__ import annotations

from pydantic import Field

from rulekit.errors import RulekitError
from rulekit.guidance.base import Guidance, GuidedRun
from rulekit.hookspecs import hookimpl
from rulekit.params import Section


class RuleGradientSettings(Section):
    """How strongly, and through what, the residual's gradient steers."""

    scale: float = Field(ge=0, description="the score is −scale × ∇ residual²")
    through_network: bool = Field(
        description="differentiate through the network's clean estimate (exact, about 3× slower) "
        "or hold the network's output fixed (the estimate's direct dependence on x_t only)"
    )


class RuleGradientScore(GuidedRun):
    """−scale × ∇ₓ residual(clean estimate of x)² at every step."""

    def __init__(self, task, scale: float, through_network: bool) -> None:
        self.task = task
        self.scale = scale
        self.through_network = through_network

    def score(self, x, time, prediction, process):
        import torch

        if self.scale == 0.0:
            return None
        with torch.enable_grad():
            if self.through_network:
                tracked, clean = x, prediction.clean_estimate
            else:
                tracked = x.detach().requires_grad_(True)
                clean = process.clean_estimate(tracked, time, prediction.output.detach())
            # Not clamped to [0, 1]: a clamp would zero the gradient wherever an early estimate
            # dips below 0, which is much of the background that a rule may need to fill.
            pixels = (clean.squeeze(1) + 1.0) / 2.0
            residual = self.task.soft_residual(pixels)
            (gradient,) = torch.autograd.grad(residual.square().sum(), tracked)
        return -self.scale * gradient

    def describe(self) -> str:
        return f"scale {self.scale:g}, through_network {self.through_network}"


class RuleGradient(Guidance):
    name = "rule-gradient"
    description = (
        "Follows the gradient of the squared residual that a differentiable version of the task's "
        "measurer reads from the model's clean-image estimate (posterior-sampling style); an oracle, "
        "it knows the rule exactly."
    )
    prior_knowledge = "the exact rule and a differentiable measurer (an oracle)"
    settings = RuleGradientSettings

    def prepare(self, settings, context):
        if not context.task.has_soft_measurer:
            raise RulekitError(
                f"guidance {self.name!r} needs a task with a differentiable measurer, and task "
                f"{context.task.name!r} has none (it implements no soft_read)"
            )
        return RuleGradientScore(context.task, settings.scale, settings.through_network)


@hookimpl
def rulekit_guidance() -> list[Guidance]:
    return [RuleGradient()]
