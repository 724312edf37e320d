"""Detectability probes: how well a classifier tells rule-abiding images from ones that break
the fine rule by δ, seen through raw pixels, noised pixels or a network's activations."""

from rulekit.probes.base import ProbeContext, ProbeError, ProbeInput

__all__ = ["ProbeContext", "ProbeError", "ProbeInput"]
