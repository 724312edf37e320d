"""The model-family API.

A ``ModelFamily`` is what a plugin registers: a name, a description, the settings it accepts
(validated from ``params.yaml``) and a factory for its ``DiffusionProcess``. The process owns the
parameterisation: the training loss, the time grid of sampling, how a network output becomes an
estimate of the clean image, how a guidance score (a gradient of a log-probability with respect
to the noisy image) enters its output, and one sampling step. rulekit's shared training loop
(``rulekit.training``) and sampling loop (``rulekit.sampling``) drive any process the same way.

Images enter a process scaled to [-1, 1] with shape (n, 1, size, size).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from rulekit.params import NetworkParams, Section

if TYPE_CHECKING:
    import torch


@dataclass
class Prediction:
    """A network's output at one noisy image and time, and the clean image it implies."""

    output: "torch.Tensor"
    clean_estimate: "torch.Tensor"


#: ``output_at(x, time)`` returns the (possibly guided) network output for the process's own
#: parameterisation; a sampling step may call it more than once (for example Heun's method).
OutputAt = Callable[["torch.Tensor", Any], "torch.Tensor"]


class DiffusionProcess(ABC):
    """How one family trains and samples, configured with validated settings."""

    @abstractmethod
    def loss(self, network: "torch.nn.Module", clean: "torch.Tensor", generator: "torch.Generator") -> "torch.Tensor":
        """The training loss (a scalar) of a batch of clean images; all randomness from ``generator``."""

    @abstractmethod
    def sampling_times(self) -> Sequence[Any]:
        """The times visited by sampling, from pure noise toward the data, one per step."""

    @abstractmethod
    def predict(self, network: "torch.nn.Module", x: "torch.Tensor", time: Any) -> Prediction:
        """The network's output at noisy images ``x`` and ``time``, with the implied clean image."""

    @abstractmethod
    def add_score(self, output: "torch.Tensor", x: "torch.Tensor", time: Any, score: "torch.Tensor") -> "torch.Tensor":
        """The output that results when ``score`` is added to the model's score of ``x`` at ``time``."""

    @abstractmethod
    def step(
        self, x: "torch.Tensor", index: int, output_at: OutputAt, generator: "torch.Generator"
    ) -> "torch.Tensor":
        """Advance noisy images ``x`` from ``sampling_times()[index]`` to the next time."""

    @abstractmethod
    def clean_estimate(self, x: "torch.Tensor", time: Any, output: "torch.Tensor") -> "torch.Tensor":
        """The clean image implied by network ``output`` at noisy images ``x`` and ``time``.

        Differentiable in ``x`` with ``output`` held fixed, which is how gradient guidance steers
        sampling without differentiating through the network.
        """

    @abstractmethod
    def noised(
        self, clean: "torch.Tensor", level: "float | torch.Tensor", generator: "torch.Generator"
    ) -> tuple["torch.Tensor", Any]:
        """Clean images noised to ``level`` of the way from data (0) to pure noise (1).

        ``level`` is one float for every image, or a tensor (n,) of one level per image. Returns
        the noisy images and the ``time`` that ``predict`` takes for them (a tensor of per-image
        times for per-image levels), so that probes and classifiers see exactly what the network
        sees during sampling.
        """

    @abstractmethod
    def level(self, time: Any) -> float:
        """The noise level in [0, 1] (0 data, 1 pure noise) of a sampling ``time``; the inverse
        of the time ``noised`` returns."""

    def initial_noise(self, shape: tuple[int, ...], generator: "torch.Generator") -> "torch.Tensor":
        """Where sampling starts: standard normal noise."""
        import torch

        return torch.randn(shape, generator=generator)


class ModelFamily(ABC):
    """Base class of every model family; register instances through the ``rulekit_models`` hook."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Settings read by ``train`` (``params.yaml``: ``model_settings.<name>``).
    train_settings: ClassVar[type[Section]]
    #: Settings read by ``sample`` (``params.yaml``: ``sampler_settings.<name>``).
    sampler_settings: ClassVar[type[Section]]

    @abstractmethod
    def process(self, train_settings: Section, sampler_settings: Section) -> DiffusionProcess:
        """The configured process for these (already validated) settings."""

    def build_network(self, network: NetworkParams, size: int) -> "torch.nn.Module":
        """A freshly initialised network for images of side ``size`` (a diffusers UNet2DModel)."""
        from rulekit.models.unet import build_unet

        return build_unet(network, size)

    def load_network(self, folder: Path) -> "torch.nn.Module":
        """The network saved in ``folder`` by ``save_network`` (safetensors only)."""
        from rulekit.models.unet import load_unet

        return load_unet(folder)

    def save_network(self, network: "torch.nn.Module", folder: Path) -> None:
        """Save ``network`` into the existing folder ``folder`` (diffusers' ``save_pretrained``)."""
        network.save_pretrained(folder, safe_serialization=True)
