"""Generative model families: a network, the objective that trains it, and its sampling step."""

from rulekit.models.base import DiffusionProcess, ModelFamily, Prediction

__all__ = ["DiffusionProcess", "ModelFamily", "Prediction"]
