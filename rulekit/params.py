"""The one place that reads ``params.yaml`` and checks it.

Each stage has its own section, as in DVC's examples, so a stage declares exactly the params it
reads and changing one section re-runs only the stages that read it. Unknown keys, wrong types
and out-of-range values stop with one line naming the key path and what is accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rulekit.errors import ParamsError

DEFAULT_PARAMS_FILE = "params.yaml"


class Section(BaseModel):
    """A block of ``params.yaml``: no unknown keys, no silent type conversion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GenerateParams(Section):
    """Settings of the ``generate`` stage."""

    seed: int = Field(ge=0, description="seed of the feature prior")
    size: int = Field(ge=4, le=1024, description="image side in pixels")
    n_images: int = Field(ge=1, le=10_000_000, description="training images per task")
    grid_images: int = Field(ge=1, le=256, description="images shown in the PNG grid")


class Params(Section):
    """Everything in ``params.yaml``."""

    tasks: list[str] = Field(min_length=1, description="the tasks every stage runs over")
    generate: GenerateParams


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        parent: Any = model
        for part in error["loc"][:-1]:
            field = parent.model_fields.get(part) if isinstance(part, str) else None
            parent = field.annotation if field is not None else None
            if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
                break
        accepted = ", ".join(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else "none"
        return f"{path}: unknown key (accepted keys here: {accepted})"
    if kind == "missing":
        return f"{path}: missing (required)"
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"{path}: {message}, got {error.get('input')!r}"


def parse_params(raw: object, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Check a parsed ``params.yaml`` mapping and return it as ``Params``."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{source}: {_describe(error.errors()[0], Params)}") from None
    _check_names(params, source)
    return params


def _check_names(params: Params, source: str) -> None:
    from rulekit.registry import get_registry

    registry = get_registry()
    known = registry.names("task")
    seen: set[str] = set()
    for index, name in enumerate(params.tasks):
        if name not in known:
            raise ParamsError(f"{source}: tasks[{index}]: unknown task {name!r}; known tasks: {', '.join(known)}")
        if name in seen:
            raise ParamsError(f"{source}: tasks[{index}]: task {name!r} is listed twice")
        seen.add(name)
    for name in params.tasks:
        task = registry.task(name)
        if not task.min_size <= params.generate.size <= task.max_size:
            raise ParamsError(
                f"{source}: generate.size: {params.generate.size} pixels is outside what task {name!r} can render "
                f"(accepted: {task.min_size} to {task.max_size})"
            )


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and check a params file; any problem stops with one line naming the key path."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path} does not exist; pass --params with the path of a params file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path} cannot be read: {error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, str(path))
