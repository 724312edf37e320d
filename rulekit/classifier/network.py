"""The rule classifier's network: a small CNN conditioned on the noise level.

It reads a noisy image (n, 1, S, S) in [-1, 1] and its noise level (0 = data, 1 = pure noise)
and returns the log-odds that the image keeps the fine rule. The level enters every
convolution block through a FiLM scale and shift computed from a sinusoidal embedding.

The fine rules are about positions and lengths, so the network keeps spatial information:
two coordinate channels join the image, and the last feature map is flattened rather than
pooled. Saved as safetensors weights beside a JSON description; loading never runs code.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from rulekit.errors import DataFileError
from rulekit.storage import load_json, replace_directory, write_bytes_atomic, write_json_atomic

WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier.json"
#: Width of the sinusoidal level embedding and of the MLP that turns it into FiLM parameters.
EMBEDDING_DIM = 32
CONDITION_DIM = 64
#: Largest number of groups in each GroupNorm.
MAX_GROUPS = 8


def level_embedding(level: torch.Tensor, dim: int = EMBEDDING_DIM) -> torch.Tensor:
    """Sinusoidal embedding (n, dim) of levels (n,) in [0, 1], as diffusion models embed time."""
    half = dim // 2
    # Levels are scaled to a diffusion model's usual 1000 steps so the fastest frequency still
    # separates neighbouring steps.
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=level.device) / half)
    angles = level.float()[:, None] * 1000.0 * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class _Block(nn.Module):
    """Convolution, GroupNorm, FiLM from the level, SiLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(math.gcd(out_channels, MAX_GROUPS), out_channels)
        self.film = nn.Linear(CONDITION_DIM, 2 * out_channels)
        # Zero FiLM at initialisation: every block starts as the unconditioned identity scale.
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(condition)[:, :, None, None].chunk(2, dim=1)
        return nn.functional.silu(self.norm(self.conv(x)) * (1.0 + scale) + shift)


class RuleClassifier(nn.Module):
    """Log-odds that a noisy image keeps the fine rule, given its noise level."""

    def __init__(self, size: int, channels: list[int], hidden: int) -> None:
        super().__init__()
        if size % 2 ** (len(channels) - 1):
            raise ValueError(f"image size {size} cannot be halved {len(channels) - 1} times")
        self.size, self.channels, self.hidden = int(size), [int(c) for c in channels], int(hidden)
        self.condition = nn.Sequential(
            nn.Linear(EMBEDDING_DIM, CONDITION_DIM), nn.SiLU(), nn.Linear(CONDITION_DIM, CONDITION_DIM), nn.SiLU()
        )
        blocks = []
        previous = 3  # the image and two coordinate channels
        for index, width in enumerate(self.channels):
            blocks.append(_Block(previous, width, stride=1 if index == 0 else 2))
            blocks.append(_Block(width, width, stride=1))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        side = self.size // 2 ** (len(self.channels) - 1)
        self.penultimate = nn.Linear(previous * side * side, self.hidden)
        self.head = nn.Linear(self.hidden, 1)
        axis = torch.linspace(-1.0, 1.0, self.size)
        rows, columns = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("coordinates", torch.stack([rows, columns])[None], persistent=False)

    @property
    def config(self) -> dict:
        """What ``build_classifier`` needs to rebuild this network."""
        return {"size": self.size, "channels": list(self.channels), "hidden": self.hidden}

    def features(self, x: torch.Tensor, level: "torch.Tensor | float") -> torch.Tensor:
        """Penultimate activations (n, hidden) of noisy images ``x`` (n, 1, S, S) at ``level``."""
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(f"expected images of shape (n, 1, {self.size}, {self.size}), got {tuple(x.shape)}")
        level = torch.as_tensor(level, dtype=torch.float32, device=x.device)
        level = level.expand(x.shape[0]) if level.ndim == 0 else level.reshape(x.shape[0])
        condition = self.condition(level_embedding(level))
        hidden = torch.cat([x, self.coordinates.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)
        for block in self.blocks:
            hidden = block(hidden, condition)
        return nn.functional.silu(self.penultimate(hidden.flatten(1)))

    def forward(self, x: torch.Tensor, level: "torch.Tensor | float") -> torch.Tensor:
        """Logits (n,): log-odds that each noisy image keeps the fine rule."""
        return self.head(self.features(x, level)).squeeze(1)


def build_classifier(size: int, channels: list[int], hidden: int) -> RuleClassifier:
    """A freshly initialised classifier (seed torch beforehand for reproducible weights)."""
    return RuleClassifier(size, channels, hidden)


def save_classifier(classifier: RuleClassifier, folder: str | Path, info: dict) -> None:
    """Write ``folder`` whole: safetensors weights and ``classifier.json`` (architecture + ``info``)."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in classifier.state_dict().items()}
    with replace_directory(folder) as staging:
        write_bytes_atomic(staging / WEIGHTS_FILE, save(tensors))
        write_json_atomic(staging / CONFIG_FILE, {"architecture": classifier.config, "info": info})


def _architecture(path: Path, payload: dict) -> tuple[int, list[int], int]:
    architecture = payload.get("architecture")
    try:
        size, channels, hidden = architecture["size"], architecture["channels"], architecture["hidden"]
    except (TypeError, KeyError) as error:
        raise DataFileError(
            f"{path} does not describe a rule classifier (missing {error}); re-run rulekit train-classifier"
        ) from None
    numbers = [size, hidden, *channels] if isinstance(channels, list) and channels else []
    if not numbers or not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in numbers):
        raise DataFileError(
            f"{path}: architecture must hold positive integers size, hidden and a list of channels; "
            "re-run rulekit train-classifier"
        )
    return size, channels, hidden


def load_classifier(folder: str | Path) -> RuleClassifier:
    """The classifier saved in ``folder`` by ``save_classifier``; damaged files stop with their name."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise DataFileError(f"{folder} holds no rule classifier; train it with rulekit train-classifier")
    size, channels, hidden = _architecture(config_path, load_json(config_path))
    try:
        classifier = build_classifier(size, channels, hidden)
    except ValueError as error:
        raise DataFileError(f"{config_path}: {error}; re-run rulekit train-classifier") from None
    try:
        tensors = load(weights_path.read_bytes())
    except FileNotFoundError:
        raise DataFileError(f"{weights_path} does not exist; re-run rulekit train-classifier") from None
    except OSError as error:
        raise DataFileError(f"{weights_path} cannot be read ({error.strerror}); re-run rulekit train-classifier") from None
    except (SafetensorError, ValueError, OverflowError) as error:
        raise DataFileError(f"{weights_path} is not a valid safetensors file ({error}); re-run rulekit train-classifier") from None
    try:
        classifier.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        # torch spreads the mismatch over several lines; a user error is one.
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:])[:300]
        raise DataFileError(f"{weights_path} does not match {config_path} ({detail}); re-run rulekit train-classifier") from None
    return classifier
