"""The guidance API.

A guidance strategy changes sampling in one or both of two ways:

- ``score``: at each step it returns the gradient, with respect to the noisy image, of a
  log-probability that the rule holds; the model family turns it into its own parameterisation
  (``DiffusionProcess.add_score``), so one strategy serves every family;
- ``select``: it draws ``oversample`` times more images and keeps the ones it ranks best.

Each strategy's ``prior_knowledge`` says what it knows about the rule, so a comparison never
mistakes an oracle for a learned method.
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from rulekit.models.base import Prediction


class Guidance(ABC):
    """Base class of every guidance strategy; register instances through ``rulekit_guidance``."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: What the strategy uses about the rule: "none", "a learned classifier", "the exact rule".
    prior_knowledge: ClassVar[str]
    #: Whether ``score`` needs gradients through the network (sampling then keeps autograd on).
    needs_gradient: ClassVar[bool] = False
    #: Images drawn per image kept.
    oversample: ClassVar[int] = 1

    def score(self, x: "torch.Tensor", time: Any, prediction: "Prediction") -> "torch.Tensor | None":
        """∇ₓ log p(rule holds | x) at one step, or None to leave the step unchanged."""
        return None

    def select(self, images: np.ndarray, keep: int) -> np.ndarray:
        """Indices of the ``keep`` images to keep out of the ``oversample`` × ``keep`` drawn."""
        return np.arange(keep)
