"""The guidance API.

A registered ``Guidance`` describes a strategy and the settings it takes (``params.yaml``:
``guidance_settings.<name>``); ``prepare`` turns it, for one task and model, into a
``GuidedRun`` that changes sampling in one or both of two ways:

- ``score``: at each step it returns the gradient, with respect to the noisy image, of a
  log-probability that the rule holds; the model family turns it into its own parameterisation
  (``DiffusionProcess.add_score``), so one strategy serves every family;
- ``select``: it draws ``oversample`` times more images and keeps the ones it ranks best.

Each strategy's ``prior_knowledge`` says what it knows about the rule, so a comparison never
mistakes an oracle for a learned method.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rulekit.errors import RulekitError
from rulekit.params import Section

if TYPE_CHECKING:
    import torch

    from rulekit.classifier.network import RuleClassifier
    from rulekit.models.base import DiffusionProcess, Prediction
    from rulekit.tasks.base import Task


class NoSettings(Section):
    """A strategy without settings."""


@dataclass
class GuidanceContext:
    """What a strategy may use for one task and model: the task (for oracles), the model's
    process, the image side, and where that model's rule classifier is saved."""

    task: "Task"
    process: "DiffusionProcess"
    size: int
    classifier_dir: Path
    _classifier: Any = field(default=None, repr=False)

    def classifier(self, user: str) -> "RuleClassifier":
        """The trained rule classifier, or stop naming ``user`` and the command that trains it."""
        if self._classifier is None:
            from rulekit.classifier.network import load_classifier

            if not self.classifier_dir.is_dir():
                raise RulekitError(
                    f"guidance {user!r} needs a trained rule classifier, but {self.classifier_dir} does not exist; "
                    f"train it first: rulekit train-classifier {self.task.name} --model {self.classifier_dir.name}"
                )
            self._classifier = load_classifier(self.classifier_dir)
            self._classifier.eval()
        return self._classifier


class GuidedRun:
    """One configured strategy during one sampling run; this base changes nothing."""

    #: Images drawn per image kept.
    oversample: int = 1
    #: Whether ``score`` differentiates through the network, so its forward pass must keep autograd.
    through_network: bool = False

    def score(
        self, x: "torch.Tensor", time: Any, prediction: "Prediction", process: "DiffusionProcess"
    ) -> "torch.Tensor | None":
        """∇ₓ log p(rule holds | x) at one step, or None to leave the step unchanged.

        ``x`` requires grad (and ``prediction`` carries the graph) only when ``through_network``.
        """
        return None

    def select(self, images: np.ndarray, keep: int) -> np.ndarray:
        """Indices of the ``keep`` images to keep out of the ``oversample`` × ``keep`` drawn."""
        return np.arange(keep)

    def describe(self) -> str:
        """The settings that matter when something goes wrong, e.g. ``scale 4``."""
        return "no settings"


class Guidance(ABC):
    """Base class of every guidance strategy; register instances through ``rulekit_guidance``."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: What the strategy uses about the rule: "none", "a learned classifier", "the exact rule".
    prior_knowledge: ClassVar[str]
    #: Its settings (``params.yaml``: ``guidance_settings.<name>``).
    settings: ClassVar[type[Section]] = NoSettings
    #: Whether it needs the rule classifier of ``rulekit train-classifier``.
    needs_classifier: ClassVar[bool] = False

    def prepare(self, settings: Section, context: GuidanceContext) -> GuidedRun:
        """The run for validated ``settings``; stops here, before any sampling, if a resource is missing."""
        return GuidedRun()


def top_indices(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` best (largest) scores, best first, ties broken by draw order.

    Non-finite scores rank last, so an image the scorer cannot judge is kept only when nothing
    else is left.
    """
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    return np.argsort(-scores, kind="stable")[:keep]
