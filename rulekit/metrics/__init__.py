"""Metrics: named numbers, with bootstrap intervals, that judge generated samples against a task's rules
and its training data."""

from rulekit.metrics.base import Metric, MetricInput
from rulekit.metrics.bootstrap import Estimate, evaluate, evaluate_all

__all__ = ["Estimate", "Metric", "MetricInput", "evaluate", "evaluate_all"]
