"""The probe-input API: what a detectability probe sees of an image.

A ``ProbeInput`` turns a batch of images into one feature vector per image, optionally at a
diffusion noise level. ``rulekit.probes.run`` fits scikit-learn classifiers on those vectors to
tell rule-abiding images from violating ones; the better they do, the more detectable the
violation is through that input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from rulekit.errors import RulekitError

if TYPE_CHECKING:
    import torch

    from rulekit.models.base import DiffusionProcess
    from rulekit.tasks.base import Task


class ProbeError(RulekitError, ValueError):
    """A probe asked for something it cannot do: a δ beyond the task's range, an unknown
    estimator, a model input without a model."""


@dataclass
class ProbeContext:
    """What a probe input may use besides the images: the task, the image side, the seed and,
    for inputs that need one, a trained model's process and network."""

    task: "Task"
    #: Image side of the probe images; the side the model was trained on.
    size: int
    seed: int
    process: "DiffusionProcess | None" = None
    network: "torch.nn.Module | None" = None
    #: The model's rule classifier (``rulekit train-classifier``), for inputs that read it.
    classifier: "torch.nn.Module | None" = None

    def require_process(self, user: str) -> "DiffusionProcess":
        """The model's process, or stop naming ``user`` (the input that needs it)."""
        if self.process is None:
            raise ProbeError(f"probe input {user!r} needs a trained model's diffusion process; none was given")
        return self.process

    def require_network(self, user: str) -> "torch.nn.Module":
        """The model's network, or stop naming ``user`` (the input that needs it)."""
        if self.network is None:
            raise ProbeError(f"probe input {user!r} needs a trained model's network; none was given")
        return self.network


    def require_classifier(self, user: str) -> "torch.nn.Module":
        """The model's rule classifier, or stop naming ``user`` (the input that needs it)."""
        if self.classifier is None:
            raise ProbeError(f"probe input {user!r} needs the model's trained rule classifier; none was given")
        return self.classifier


class ProbeInput(ABC):
    """Base class of every probe input; register instances through ``rulekit_probe_inputs``."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: False: the input ignores noise levels (one probe per δ); True: one probe per (δ, level).
    uses_noise_level: ClassVar[bool]
    #: Whether ``features`` needs ``context.process`` and ``context.network``.
    needs_model: ClassVar[bool] = False
    #: Whether ``features`` needs ``context.classifier``.
    needs_classifier: ClassVar[bool] = False

    @abstractmethod
    def features(self, images: np.ndarray, level: float | None, context: ProbeContext) -> np.ndarray:
        """Feature rows, float32 (n, d), of images float32 (n, size, size) in [0, 1].

        ``level`` is the noise level in [0, 1] (0 data, 1 pure noise) for inputs that use one,
        else None. The same images, level and context give the same rows.
        """
