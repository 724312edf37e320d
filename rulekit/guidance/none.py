"""``none``: plain sampling, the baseline every other strategy is compared with."""

from __future__ import annotations

from rulekit.guidance.base import Guidance
from rulekit.hookspecs import hookimpl


class NoGuidance(Guidance):
    name = "none"
    description = "Unguided sampling from the model (the baseline); uses no knowledge of the rule."
    prior_knowledge = "none"


@hookimpl
def rulekit_guidance() -> list[Guidance]:
    return [NoGuidance()]
