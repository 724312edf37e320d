"""``rule-gradient``: steer sampling down the gradient of the task's own squared residual.

At each step the model's estimate of the clean image x̂₀ is measured by the task's differentiable
measurer (``Task.soft_residual``), and the step moves x̂₀ down the gradient of the squared
residual r², in the style of diffusion posterior sampling. It knows the rule exactly, so it is
the upper reference for what gradient guidance can do.

The step's length is a Gauss–Newton step's: moving x̂₀ by −r ∇r / |∇r|² (that is, −½ ∇r² / |∇r|²)
zeroes the linearised residual, and ``scale`` is the fraction of that step taken at each sampling
step. A plain multiple of ∇r² was tried first and diverged on every task: on the blurred estimates
of the first steps the measurer reads residuals in the thousands, and squaring them fed back
until the images overflowed. Here the residual is first clipped to what the task can violate,
and no pixel moves by more than ``MAX_PIXEL_STEP`` in one step. The score is then whatever
moves x̂₀ by that step in the model family's own parameterisation, so one ``scale`` means the
same at every noise level and in every family.
"""

from __future__ import annotations

from pydantic import Field

from rulekit.errors import RulekitError
from rulekit.guidance.base import Guidance, GuidedRun
from rulekit.hookspecs import hookimpl
from rulekit.params import Section


#: Added to |∇r|² so that a region where the measurer sees almost nothing asks for no huge step.
DAMPING = 1e-4
#: The most one sampling step moves any pixel of x̂₀ (images span [-1, 1]).
MAX_PIXEL_STEP = 0.5


class RuleGradientSettings(Section):
    """How strongly, and through what, the residual's gradient steers."""

    scale: float = Field(ge=0, le=10, description="fraction of the Gauss–Newton step toward the rule taken at each step")
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
            # Images are measured independently, so the gradient of the sum is each one's ∇r.
            (gradient,) = torch.autograd.grad(residual.sum(), tracked)
        with torch.no_grad():
            output = prediction.output.detach()
            probe_x, probe_output = x.detach()[:1], output[:1]
            base = process.clean_estimate(probe_x, time, probe_output)
            # a = ∂x̂₀/∂x_t with the output held fixed, and c = how far a unit score moves x̂₀:
            # both are scalars of the process at this time, read off its own maps.
            a = (process.clean_estimate(probe_x + 1.0, time, probe_output) - base).mean()
            moved = process.add_score(probe_output, probe_x, time, torch.ones_like(probe_x))
            c = (process.clean_estimate(probe_x, time, moved) - base).mean()
            gradient_clean = gradient / a
            limit = self.task.max_violation
            clipped = torch.nan_to_num(residual.detach(), nan=0.0).clamp(-limit, limit)
            length = self.scale * clipped / (gradient_clean.square().sum(dim=(1, 2, 3)) + DAMPING)
            step = (-length.view(-1, 1, 1, 1) * gradient_clean).clamp(-MAX_PIXEL_STEP, MAX_PIXEL_STEP)
        return step / c

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
