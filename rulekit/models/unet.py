"""The diffusers UNet2DModel that both built-in families train, shaped by ``params.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

from rulekit.errors import DataFileError
from rulekit.params import NetworkParams


def build_unet(network: NetworkParams, size: int):
    """A single-channel UNet2DModel for images of side ``size``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import UNet2DModel

    levels = len(network.block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if network.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=size,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(network.block_out_channels),
        layers_per_block=network.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=network.norm_num_groups,
    )


def load_unet(folder: Path):
    """Load a UNet2DModel saved with ``save_pretrained``; never falls back to pickle files."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import UNet2DModel

    folder = Path(folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not (folder / "config.json").exists() or not weights.exists():
        raise DataFileError(f"{folder} holds no saved model (config.json and {weights.name}); run the train stage first")
    try:
        return UNet2DModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    except Exception as error:  # diffusers raises many types for a damaged file
        raise DataFileError(f"{weights} could not be loaded ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); delete it and re-run train") from None
