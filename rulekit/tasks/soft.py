"""Differentiable (torch) counterparts of ``geometry``'s estimators and of ``remove_background``.

Each estimator here computes what its namesake in ``geometry`` computes, with the same maths, on
torch tensors and with gradients, so a task that writes its measurer once over an estimator
module reads the same features from numpy images (``geometry``) and torch images (this module).
Where an estimator selects (the running-sum boundary nearest half an extent), the selection is
piecewise constant and the gradient flows through the selected values. Square roots carry a small
epsilon and centres stay inside their region, so blank and noise images give finite values and
gradients.
"""

from __future__ import annotations

import torch

from rulekit.tasks import geometry
from rulekit.tasks.base import MIN_INK

#: Added to an area (square pixels) under its square root: gradients stay finite on a blank
#: region, and the side of the smallest shape a task draws moves by less than 1e-4 pixels.
AREA_EPSILON_PX = 1e-4

#: The most that ``remove_background`` stretches ink above a light background.
MAX_INK_SCALE = 10.0

#: Slicing between pixel boundaries is the same on tensors as on arrays.
region = geometry.region


def remove_background(images: torch.Tensor) -> torch.Tensor:
    """Images (n, size, size) with their background level subtracted: ``remove_background``'s
    counterpart for guidance.

    As there, the background is each image's median pixel, pixels less than ``MIN_INK`` above it
    become 0, and the rest are rescaled so that full ink stays 1; rendered images pass through
    exactly as there. Unlike there:

    - haze is not cut at ``BACKGROUND_SIGMAS`` σ: a model's early estimate of the clean image is
      blurry, and its soft edges are where the shapes' positions are;
    - the background level is held fixed (detached): it is a reference, not something to steer;
    - the gradient is that of the unthresholded ``(pixel − background) × scale`` (straight
      through the threshold), because a thresholded pixel would have none, and guidance could
      then take ink away but never add it where there is none;
    - the rescaling is at most ``MAX_INK_SCALE``: a background whiter than that leaves no room
      for ink worth measuring, and an unbounded scale would blow up the gradient there.
    """
    flat = images.flatten(1)
    background = flat.detach().median(dim=1).values[:, None]
    scale = 1.0 / (1.0 - background).clamp_min(1.0 / MAX_INK_SCALE)
    linear = (flat - background) * scale
    thresholded = torch.where(flat - background >= MIN_INK, linear, torch.zeros_like(linear))
    return (linear + (thresholded - linear).detach()).reshape(images.shape)


def upright(images: torch.Tensor) -> torch.Tensor:
    """Images (n, rows, cols) indexed [n, y, x] with y growing upward (a flipped copy)."""
    return images.flip(1)


def area_px(pixels: torch.Tensor) -> torch.Tensor:
    """Covered area of each image region, in square pixels."""
    return pixels.sum(dim=(1, 2))


def low_edge_px(profile: torch.Tensor, extent_px: torch.Tensor, offset: int) -> torch.Tensor:
    """Low edge, in pixels, of one interval of length ``extent_px`` given its coverage profile:
    ``geometry.low_edge_px``, read at the integer boundary whose running sum is nearest half
    the extent."""
    running = torch.nn.functional.pad(profile.cumsum(dim=1), (1, 0))
    inner = (running - extent_px[:, None] / 2).abs().argmin(dim=1, keepdim=True)
    return offset + inner[:, 0].to(running.dtype) - running.gather(1, inner)[:, 0]


def square(pixels: torch.Tensor, x_offset: int, y_offset: int):
    """Centre x, centre y and side (all in pixels) of the one square in each upright region:
    ``geometry.square``, with each centre kept inside the region (where a square in it has its
    centre) so that rules dividing by a distance to the region's edge stay finite."""
    side = torch.sqrt(area_px(pixels) + AREA_EPSILON_PX)
    across = pixels.sum(dim=1) / side[:, None]
    up = pixels.sum(dim=2) / side[:, None]
    rows, cols = pixels.shape[1:]
    centre_x = (low_edge_px(across, side, x_offset) + side / 2).clamp(x_offset, x_offset + cols)
    centre_y = (low_edge_px(up, side, y_offset) + side / 2).clamp(y_offset, y_offset + rows)
    return centre_x, centre_y, side
