"""Guidance strategies: how sampling is steered toward (or filtered for) rule-abiding images."""

from rulekit.guidance.base import Guidance

__all__ = ["Guidance"]
