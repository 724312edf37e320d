"""Training checkpoints that resume exactly and can never run code when loaded.

A checkpoint is a folder ``step-NNNNNNNN/`` holding ``tensors.safetensors`` (every tensor of the
training state) and ``state.json`` (everything else: optimiser hyper-parameters, schedule,
step, loss history), written in a staging folder and renamed into place whole. A nested state
(an optimiser's ``state_dict``) is split into a JSON skeleton whose tensor leaves name entries of
the safetensors file, and joined again on load.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from rulekit.errors import DataFileError
from rulekit.storage import replace_directory, write_bytes_atomic, write_json_atomic

TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
_FOLDER = re.compile(r"^step-(\d{8})$")


def split_state(value: Any, tensors: dict | None = None, path: str = "t") -> tuple[Any, dict]:
    """Split a nested state into a JSON-able skeleton and a flat ``{name: tensor}`` mapping."""
    import torch

    tensors = {} if tensors is None else tensors
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}, tensors
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("__") for key in value):
            return {key: split_state(item, tensors, f"{path}.{key}")[0] for key, item in value.items()}, tensors
        items = [[key, split_state(item, tensors, f"{path}.{index}")[0]] for index, (key, item) in enumerate(value.items())]
        return {"__items__": items}, tensors
    if isinstance(value, tuple):
        return {"__tuple__": [split_state(item, tensors, f"{path}.{i}")[0] for i, item in enumerate(value)]}, tensors
    if isinstance(value, list):
        return [split_state(item, tensors, f"{path}.{i}")[0] for i, item in enumerate(value)], tensors
    if value is None or isinstance(value, (bool, int, float, str)):
        return value, tensors
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def join_state(skeleton: Any, tensors: dict) -> Any:
    """Rebuild the nested state that ``split_state`` split."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__items__" in skeleton:
            return {key: join_state(item, tensors) for key, item in skeleton["__items__"]}
        if "__tuple__" in skeleton:
            return tuple(join_state(item, tensors) for item in skeleton["__tuple__"])
        return {key: join_state(item, tensors) for key, item in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_state(item, tensors) for item in skeleton]
    return skeleton


def checkpoint_folders(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first (staging folders are never listed)."""
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in root.iterdir() if (match := _FOLDER.match(path.name))]
    return sorted(found)


def save_checkpoint(root: Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as the checkpoint for ``step`` and drop all but the newest ``keep``."""
    from safetensors.torch import save

    skeleton, tensors = split_state(state)
    folder = root / f"step-{step:08d}"
    with replace_directory(folder) as staging:
        write_bytes_atomic(staging / TENSORS_FILE, save(tensors))
        write_json_atomic(staging / STATE_FILE, skeleton)
    for _, old in checkpoint_folders(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path) -> dict:
    """The state saved in a checkpoint folder; a damaged file stops with its name."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    def damaged(path: Path, problem: str) -> DataFileError:
        return DataFileError(f"checkpoint file {path} {problem}; delete {folder} to resume from an earlier checkpoint")

    state_path, tensors_path = folder / STATE_FILE, folder / TENSORS_FILE
    try:
        skeleton = json.loads(state_path.read_text())
        tensors = load(tensors_path.read_bytes())
    except FileNotFoundError as error:
        raise damaged(Path(error.filename), "is missing") from None
    except OSError as error:
        raise damaged(Path(error.filename), f"cannot be read ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged(state_path, f"is corrupt ({error})") from None
    except (SafetensorError, ValueError, OverflowError) as error:
        raise damaged(tensors_path, f"is corrupt ({error})") from None
    try:
        return join_state(skeleton, tensors)
    except (KeyError, TypeError, ValueError) as error:
        raise DataFileError(f"checkpoint {folder} is inconsistent ({error}); delete it to resume from an earlier checkpoint") from None
