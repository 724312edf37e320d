"""The one place that reads ``params.yaml`` and checks it.

Each stage has its own section, as in DVC's examples, so a stage declares exactly the params it
reads and changing one section re-runs only the stages that read it. Unknown keys, wrong types
and out-of-range values stop with one line naming the key path and what is accepted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

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


class NetworkParams(Section):
    """The shape of the network every model family trains (a diffusers UNet2DModel)."""

    block_out_channels: list[int] = Field(min_length=1, max_length=6, description="channels per resolution level")
    layers_per_block: int = Field(ge=1, le=8)
    norm_num_groups: int = Field(ge=1, le=64)
    attention: bool = Field(description="self-attention at the lowest resolution")


class TrainParams(Section):
    """Settings of the ``train`` stage shared by every model family."""

    seed: int = Field(ge=0)
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(ge=1, le=65_536)
    learning_rate: float = Field(gt=0, le=1)
    lr_schedule: Literal["constant", "cosine", "linear"]
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0, le=1)
    grad_clip: float = Field(gt=0)
    ema_decay: float = Field(ge=0, lt=1)
    gradient_accumulation_steps: int = Field(ge=1, le=1024)
    # "fp32", not Accelerate's "no": YAML 1.1 readers take an unquoted no for false, and
    # ``dvc exp run -S`` rewrites params.yaml without the quotes.
    mixed_precision: Literal["fp32", "fp16", "bf16"]
    checkpoint_every: int = Field(ge=1)
    keep_checkpoints: int = Field(ge=1, le=1000)
    log_every: int = Field(ge=1)


class SampleParams(Section):
    """Settings of the ``sample`` stage."""

    seed: int = Field(ge=0)
    n_samples: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(ge=1, le=65_536)
    grid_images: int = Field(ge=1, le=256)


class ClassifierParams(Section):
    """Settings of the ``train_classifier`` stage: the noise-conditioned rule classifier."""

    seed: int = Field(ge=0)
    reject_threshold: float = Field(gt=0, le=1, description="measured |residual| above which an own sample is a negative")
    synthetic_fraction: float = Field(ge=0, le=1, description="share of negatives that are synthetic violations")
    synthetic_deltas: list[float] = Field(min_length=2, max_length=2, description="[smallest, largest] synthetic δ")
    channels: list[int] = Field(min_length=1, max_length=5, description="convolution channels per resolution level")
    hidden: int = Field(ge=1, le=4096, description="width of the penultimate layer (the probe's features)")
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(ge=2, le=65_536)
    learning_rate: float = Field(gt=0, le=1)
    max_level: float = Field(gt=0, le=1, description="noise levels trained on: uniform in [0, max_level]")
    holdout_fraction: float = Field(gt=0, lt=1, description="share of data and rejected samples held out")
    eval_deltas: list[float] = Field(min_length=1, description="synthetic δ of the held-out AUC table")
    eval_levels: list[float] = Field(min_length=1, description="noise levels of the held-out AUC table")
    n_eval_per_class: int = Field(ge=10, le=1_000_000)


class EvaluateParams(Section):
    """Settings of the ``evaluate`` stage: guided sampling with each strategy, then every metric."""

    sampling_seed: int = Field(ge=0, description="seed of the evaluation samples, the same for every strategy")
    n_samples: int = Field(ge=1, le=10_000_000, description="samples kept per strategy")
    batch_size: int = Field(ge=1, le=65_536)
    grid_images: int = Field(ge=1, le=256)
    seed: int = Field(ge=0)
    n_resamples: int = Field(ge=10, le=100_000, description="bootstrap resamples per interval")
    confidence: float = Field(gt=0, lt=1)


class ProbeParams(Section):
    """Settings of the ``probe`` stage."""

    seed: int = Field(ge=0)
    inputs: list[str] = Field(min_length=1, description="probe inputs (rulekit list-plugins --kind probe-input)")
    estimators: list[str] = Field(min_length=1)
    deltas: list[float] = Field(min_length=1, description="fine-rule violations to detect, in image-side units")
    levels: list[float] = Field(min_length=1, description="noise levels, 0 = data, 1 = pure noise")
    n_per_class: int = Field(ge=10, le=1_000_000)
    test_fraction: float = Field(gt=0, lt=1)


class Params(Section):
    """Everything in ``params.yaml``."""

    tasks: list[str] = Field(min_length=1, description="the tasks every stage runs over")
    models: list[str] = Field(min_length=1, description="the model families every task trains")
    guidance: list[str] = Field(min_length=1, description="the guidance strategies every model is evaluated with")
    guidance_settings: dict[str, dict[str, Any]] = Field(description="per strategy: its scale, oversampling, ...")
    generate: GenerateParams
    network: NetworkParams
    train: TrainParams
    model_settings: dict[str, dict[str, Any]] = Field(description="per family: how it trains")
    sampler_settings: dict[str, dict[str, Any]] = Field(description="per family: how it samples")
    sample: SampleParams
    classifier: ClassifierParams
    evaluate: EvaluateParams
    probe: ProbeParams

    _family_settings: dict[tuple[str, str], Section] = PrivateAttr(default_factory=dict)

    def train_settings_for(self, model: str) -> Section:
        """The validated ``model_settings`` of one model family; stops if the file has none."""
        return self._settings("model_settings", model)

    def sampler_settings_for(self, model: str) -> Section:
        """The validated ``sampler_settings`` of one model family; stops if the file has none."""
        return self._settings("sampler_settings", model)

    def guidance_settings_for(self, guidance: str) -> Section:
        """The validated ``guidance_settings`` of one strategy (its defaults if the file has none)."""
        return self._settings("guidance_settings", guidance)

    def _settings(self, section: str, name: str) -> Section:
        if (section, name) not in self._family_settings:
            if section == "guidance_settings":
                return _guidance_settings(self, name, {}, DEFAULT_PARAMS_FILE)
            raise ParamsError(f"{section}.{name}: missing (needed to use model {name!r})")
        return self._family_settings[(section, name)]


def _describe(error: dict[str, Any], model: type[BaseModel], prefix: str = "") -> str:
    path = prefix + (".".join(str(part) for part in error["loc"]) or "(top level)")
    kind = error["type"]
    if kind == "extra_forbidden":
        parent: Any = model
        for part in error["loc"][:-1]:
            field = parent.model_fields.get(part) if isinstance(part, str) else None
            parent = field.annotation if field is not None else None
            if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
                break
        accepted = ", ".join(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else ""
        if not accepted:
            return f"{path}: unknown key (no keys are accepted here)"
        return f"{path}: unknown key (accepted keys here: {accepted})"
    if kind == "missing":
        return f"{path}: missing (required)"
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"{path}: {message}, got {error.get('input')!r}"


def _first_error(error: ValidationError) -> dict[str, Any]:
    """The error to report: an unknown key before anything else, since a misspelt key also
    makes the key it was meant to be look missing, and only the unknown one shows the typo."""
    errors = error.errors()
    return next((item for item in errors if item["type"] == "extra_forbidden"), errors[0])


def parse_params(raw: object, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Check a parsed ``params.yaml`` mapping and return it as ``Params``."""
    if raw is None:
        raise ParamsError(f"{source}: the file is empty; expected a mapping of sections at the top level")
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{source}: {_describe(_first_error(error), Params)}") from None
    _check_names(params, source)
    _check_family_settings(params, source)
    _check_guidance_settings(params, source)
    _check_classifier(params, source)
    _check_shapes(params, source)
    _check_memory(params, source)
    return params


def _check_list(names: list[str], kind: str, key: str, source: str) -> None:
    from rulekit.registry import KINDS, get_registry

    known = get_registry().names(kind)
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name not in known:
            raise ParamsError(
                f"{source}: {key}[{index}]: unknown {kind} {name!r}; known {KINDS[kind].plural}: {', '.join(known) or 'none'}"
            )
        if name in seen:
            raise ParamsError(f"{source}: {key}[{index}]: {kind} {name!r} is listed twice")
        seen.add(name)


def _check_family_settings(params: Params, source: str) -> None:
    from rulekit.registry import get_registry

    registry = get_registry()
    for section in ("model_settings", "sampler_settings"):
        mapping = getattr(params, section)
        _check_list(list(mapping), "model", section, source)
        for name in params.models:
            if name not in mapping:
                raise ParamsError(f"{source}: {section}.{name}: missing (every family in models needs its settings)")
        for name, raw in mapping.items():
            family = registry.get("model", name)
            settings_model = family.train_settings if section == "model_settings" else family.sampler_settings
            try:
                params._family_settings[(section, name)] = settings_model.model_validate(raw)
            except ValidationError as error:
                detail = _describe(_first_error(error), settings_model, prefix=f"{section}.{name}.")
                raise ParamsError(f"{source}: {detail}") from None


def _guidance_settings(params: Params, name: str, raw: object, source: str) -> Section:
    from rulekit.registry import get_registry

    settings_model = get_registry().get("guidance", name).settings
    try:
        settings = settings_model.model_validate(raw)
    except ValidationError as error:
        detail = _describe(_first_error(error), settings_model, prefix=f"guidance_settings.{name}.")
        if _first_error(error)["type"] == "missing" and raw == {}:
            detail = f"guidance_settings.{name}: missing (strategy {name!r} has settings without defaults)"
        raise ParamsError(f"{source}: {detail}") from None
    params._family_settings[("guidance_settings", name)] = settings
    return settings


def _check_guidance_settings(params: Params, source: str) -> None:
    _check_list(list(params.guidance_settings), "guidance", "guidance_settings", source)
    for name, raw in params.guidance_settings.items():
        _guidance_settings(params, name, raw if raw is not None else {}, source)
    for name in params.guidance:
        if name not in params.guidance_settings:
            _guidance_settings(params, name, {}, source)


def _check_classifier(params: Params, source: str) -> None:
    from rulekit.registry import get_registry

    settings = params.classifier
    low, high = settings.synthetic_deltas
    if not 0.0 < low <= high:
        raise ParamsError(f"{source}: classifier.synthetic_deltas: need 0 < smallest <= largest, got {[low, high]}")
    registry = get_registry()
    for name in params.tasks:
        largest = registry.task(name).max_violation
        for key, deltas in (("synthetic_deltas", [high]), ("eval_deltas", settings.eval_deltas)):
            for index, delta in enumerate(deltas):
                if not 0.0 < delta <= largest:
                    where = "" if key == "synthetic_deltas" else f"[{index}]"
                    raise ParamsError(
                        f"{source}: classifier.{key}{where}: {delta} is outside what task {name!r} can violate "
                        f"(accepted: above 0, at most {largest})"
                    )
    for index, level in enumerate(settings.eval_levels):
        if not 0.0 <= level <= 1.0:
            raise ParamsError(f"{source}: classifier.eval_levels[{index}]: {level} is outside [0, 1] (0 = data, 1 = pure noise)")
    factor = 2 ** (len(settings.channels) - 1)
    if params.generate.size % factor:
        raise ParamsError(
            f"{source}: classifier.channels: {len(settings.channels)} levels halve the image {len(settings.channels) - 1} "
            f"times, so generate.size must be a multiple of {factor}; got {params.generate.size}"
        )


def _check_shapes(params: Params, source: str) -> None:
    network, size = params.network, params.generate.size
    for index, channels in enumerate(network.block_out_channels):
        if channels % network.norm_num_groups:
            raise ParamsError(
                f"{source}: network.block_out_channels[{index}]: {channels} is not a multiple of "
                f"network.norm_num_groups ({network.norm_num_groups})"
            )
    factor = 2 ** (len(network.block_out_channels) - 1)
    if size % factor:
        raise ParamsError(
            f"{source}: generate.size: a network with {len(network.block_out_channels)} levels halves the image "
            f"{len(network.block_out_channels) - 1} times, so the size must be a multiple of {factor}; got {size}"
        )
    if params.train.batch_size % params.train.gradient_accumulation_steps:
        raise ParamsError(
            f"{source}: train.batch_size: {params.train.batch_size} is not a multiple of "
            f"train.gradient_accumulation_steps ({params.train.gradient_accumulation_steps})"
        )


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not report it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(params: Params, source: str) -> None:
    """Stop when the largest array a stage would hold is bigger than this machine's memory.

    Such a run cannot succeed, and it does not fail cleanly: it allocates, swaps the machine to a
    crawl or is killed by the kernel without a message, often after minutes of work. The arrays'
    sizes follow from the params alone, so the run stops here instead, naming the key to lower.
    Each estimate is one stage's largest array (``generate``: the uint8 images plus the float32
    chunk being rendered; ``sample``: its unguided draw as float32; ``evaluate``: every float32
    image drawn, times the largest ``oversample`` among the strategies; ``probe``: the float32
    images of one δ, once per probe input, each of which turns them into features about as
    large), so a run that passes may still need more memory, but one that fails cannot fit.
    """
    from rulekit.stages.generate import CHUNK

    available = physical_memory_bytes()
    if not available:
        return
    float32_bytes = 4
    size = params.generate.size
    pixels = size * size
    n_images, n_probe = params.generate.n_images, 2 * params.probe.n_per_class
    strategies = dict.fromkeys([*params.guidance, *params.guidance_settings])
    oversample, strategy = max((getattr(params.guidance_settings_for(name), "oversample", 1), name) for name in strategies)
    drawn = f" drawn {oversample}× over (guidance_settings.{strategy}.oversample)" if oversample > 1 else ""
    needs = (
        ("generate.n_images", n_images * pixels + min(n_images, CHUNK) * pixels * float32_bytes,
         f"{n_images} uint8 images of {size}×{size} pixels"),
        ("sample.n_samples", params.sample.n_samples * pixels * float32_bytes,
         f"{params.sample.n_samples} float32 samples of {size}×{size} pixels"),
        ("evaluate.n_samples", params.evaluate.n_samples * oversample * pixels * float32_bytes,
         f"{params.evaluate.n_samples} float32 samples of {size}×{size} pixels{drawn}"),
        ("probe.n_per_class", n_probe * pixels * float32_bytes * len(params.probe.inputs),
         f"{n_probe} float32 images of {size}×{size} pixels for each of {len(params.probe.inputs)} probe inputs"),
    )
    for key, needed, what in needs:
        if needed > available:
            raise ParamsError(
                f"{source}: {key}: {what} need {needed:,} bytes ({needed / 2**30:,.1f} GiB), more than this "
                f"machine's {available:,} bytes ({available / 2**30:,.1f} GiB) of memory; lower {key}"
            )


def _check_probe(params: Params, source: str) -> None:
    from rulekit.probes.run import ESTIMATORS
    from rulekit.registry import get_registry

    probe = params.probe
    for index, name in enumerate(probe.estimators):
        if name not in ESTIMATORS:
            raise ParamsError(
                f"{source}: probe.estimators[{index}]: unknown estimator {name!r}; known estimators: {', '.join(ESTIMATORS)}"
            )
    for index, level in enumerate(probe.levels):
        if not 0.0 <= level <= 1.0:
            raise ParamsError(f"{source}: probe.levels[{index}]: {level} is outside [0, 1] (0 = data, 1 = pure noise)")
    registry = get_registry()
    for index, delta in enumerate(probe.deltas):
        for name in params.tasks:
            largest = registry.task(name).max_violation
            if not 0.0 <= delta <= largest:
                raise ParamsError(
                    f"{source}: probe.deltas[{index}]: {delta} is outside what task {name!r} can violate (accepted: 0 to {largest})"
                )


def _check_names(params: Params, source: str) -> None:
    from rulekit.registry import get_registry

    registry = get_registry()
    _check_list(params.tasks, "task", "tasks", source)
    _check_list(params.models, "model", "models", source)
    _check_list(params.guidance, "guidance", "guidance", source)
    _check_list(params.probe.inputs, "probe-input", "probe.inputs", source)
    _check_probe(params, source)
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
