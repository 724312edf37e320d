"""The one training loop: any model family, through Hugging Face Accelerate, resumable exactly.

Every random draw of a step (its batch, its noise, its diffusion times) comes from generators
seeded by (seed, step, process, micro-batch), so a run resumed from a checkpoint replays the
remaining steps exactly and ends with the same weights as one that was never interrupted.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rulekit.checkpoints import checkpoint_folders, load_checkpoint, save_checkpoint
from rulekit.dataset import ARRAYS_FILE, read_dataset, to_model_range
from rulekit.errors import DataFileError, ParamsError, RulekitError
from rulekit.params import Params
from rulekit.progress import progress_bar
from rulekit.registry import get_registry
from rulekit.storage import replace_directory, write_bytes_atomic, write_json_atomic

MODEL_INFO_FILE = "rulekit.json"
#: Settings that change how often things are written, not what is trained.
BOOKKEEPING_KEYS = ("checkpoint_every", "keep_checkpoints", "log_every")
LR_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}
#: ``train.mixed_precision`` -> Accelerate's name for it.
ACCELERATE_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}


class TrainingDiverged(RulekitError):
    """The training loss stopped being a finite number."""


def seed_for(*parts: int | str) -> int:
    """A 32-bit seed drawn from any mix of integers and names, stably across runs and machines."""
    words = [part if isinstance(part, int) else int.from_bytes(hashlib.sha256(part.encode()).digest()[:4], "little") for part in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def batch_indices(seed: int, step: int, n_images: int, batch_size: int) -> np.ndarray:
    """The training images of one optimiser step: epochs of seeded permutations, last partial batch dropped."""
    per_epoch = n_images // batch_size
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_images)
    return order[position * batch_size : (position + 1) * batch_size]


class EMA:
    """An exponential moving average of a network's parameters, warmed up over the first steps."""

    def __init__(self, network, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: parameter.detach().clone() for name, parameter in network.named_parameters()}

    def update(self, network, step: int) -> None:
        import torch

        decay = min(self.decay, (1 + step) / (10 + step))
        names, parameters = zip(*network.named_parameters())
        with torch.no_grad():
            # One fused call over all tensors rather than a Python loop: this runs every step.
            torch._foreach_lerp_([self.shadow[name] for name in names], [p.detach() for p in parameters], 1.0 - decay)

    def copy_to(self, network) -> None:
        import torch

        with torch.no_grad():
            for name, parameter in network.named_parameters():
                parameter.copy_(self.shadow[name])


def _matching_shadow(saved: dict, fresh: dict) -> dict:
    """The EMA weights of a checkpoint, checked name by name and shape by shape against the network's."""
    for name, tensor in fresh.items():
        if name not in saved or saved[name].shape != tensor.shape:
            found = tuple(saved[name].shape) if name in saved else "nothing"
            raise ValueError(f"EMA weight {name}: expected shape {tuple(tensor.shape)}, found {found}")
    return saved


def data_fingerprint(data_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(data_dir / ARRAYS_FILE, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_fingerprint(model_name: str, params: Params, data_hash: str, world_size: int) -> str:
    """What decides the trained weights; checkpoints of a different run are never resumed."""
    train = {key: value for key, value in params.train.model_dump().items() if key not in BOOKKEEPING_KEYS}
    payload = {
        "model": model_name,
        "settings": params.train_settings_for(model_name).model_dump(),
        "network": params.network.model_dump(),
        "train": train,
        "data": data_hash,
        "world_size": world_size,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    return torch.cuda.is_available() or bool(accelerator is not None and accelerator.is_available())


@dataclass(frozen=True)
class TrainingPaths:
    """Where one training run reads and writes."""

    data: Path
    model: Path
    checkpoints: Path
    loss_curve: Path


def train_model(
    task_name: str,
    model_name: str,
    params: Params,
    paths: TrainingPaths,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train one model family on one task's data, resuming from the newest checkpoint if any.

    Writes the EMA network to ``paths.model`` (``save_pretrained`` plus ``rulekit.json``) and the
    loss curve to ``paths.loss_curve``; returns the summary written to ``rulekit.json``.
    ``on_step(step)`` is called after each completed optimiser step.
    """
    import torch
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler

    registry = get_registry()
    registry.task(task_name)
    family = registry.get("model", model_name)
    settings = params.train
    dataset = read_dataset(paths.data)
    size = dataset.size
    levels = len(params.network.block_out_channels)
    if size % 2 ** (levels - 1):
        raise ParamsError(
            f"network.block_out_channels: a {levels}-level network needs an image size that is a multiple of "
            f"{2 ** (levels - 1)}, but {paths.data} holds {size}×{size} images"
        )
    if settings.batch_size > len(dataset.images):
        raise ParamsError(f"train.batch_size: {settings.batch_size} exceeds the {len(dataset.images)} training images")
    process = family.process(params.train_settings_for(model_name), params.sampler_settings_for(model_name))

    # Without an accelerator, Accelerate joins torchrun or `accelerate launch` processes only
    # when told it runs on the CPU (then over gloo).
    accelerator = Accelerator(mixed_precision=ACCELERATE_PRECISION[settings.mixed_precision], cpu=not _has_accelerator())
    world, rank = accelerator.num_processes, accelerator.process_index
    accumulation = settings.gradient_accumulation_steps
    if settings.batch_size % (world * accumulation):
        raise ParamsError(
            f"train.batch_size: {settings.batch_size} does not split into {world} processes × "
            f"{accumulation} accumulation steps"
        )
    micro = settings.batch_size // (world * accumulation)
    if world > 1 and accelerator.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    torch.manual_seed(seed_for(settings.seed, "init"))
    network = family.build_network(params.network, size)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = get_scheduler(
        LR_SCHEDULES[settings.lr_schedule], optimizer, num_warmup_steps=settings.warmup_steps, num_training_steps=settings.steps
    )
    ema = EMA(network, settings.ema_decay)
    run_dir = paths.checkpoints / run_fingerprint(model_name, params, data_fingerprint(paths.data), world)

    start, losses, resumed_from = 0, [], None
    folders = checkpoint_folders(run_dir)
    if folders:
        resumed_from = folders[-1][1]
        state = load_checkpoint(resumed_from)
        try:
            network.load_state_dict(state["model"])
            ema.shadow = _matching_shadow(state["ema"], ema.shadow)
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            torch.set_rng_state(state["rng"])
            start, losses = int(state["step"]), [list(pair) for pair in state["losses"]]
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            # torch spreads a mismatch over many lines, one per tensor; the first says enough.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else "".join(lines)
            raise DataFileError(
                f"checkpoint {resumed_from} does not fit this run ({type(error).__name__}: {detail}); "
                "delete it to resume from an earlier checkpoint"
            ) from None

    network, optimizer = accelerator.prepare(network, optimizer)
    bare = accelerator.unwrap_model(network)
    ema.shadow = {name: tensor.to(accelerator.device) for name, tensor in ema.shadow.items()}
    images = to_model_range(dataset.images).to(accelerator.device)

    def checkpoint(step: int) -> None:
        if accelerator.is_main_process:
            state = {
                "model": bare.state_dict(),
                "ema": ema.shadow,
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "losses": losses,
            }
            save_checkpoint(run_dir, step, state, settings.keep_checkpoints)
        accelerator.wait_for_everyone()

    running_loss = torch.zeros((), device=accelerator.device)
    running_count = 0
    first_bad_step = torch.full((), -1, dtype=torch.long, device=accelerator.device)

    def flush_losses(step: int) -> float:
        nonlocal running_loss, running_count
        mean = accelerator.reduce(running_loss / max(running_count, 1), reduction="mean")
        bad = int(accelerator.reduce(first_bad_step.clone(), reduction="max").item())
        if bad >= 0:
            last_good = checkpoint_folders(run_dir)
            kept = f"; the last good checkpoint is {last_good[-1][1]}" if last_good else ""
            raise TrainingDiverged(f"training loss became non-finite at step {bad + 1}{kept}; lower train.learning_rate")
        running_loss, running_count = torch.zeros((), device=accelerator.device), 0
        value = float(mean.item())
        losses.append([step, value])
        return value

    started = time.perf_counter()
    network.train()
    with progress_bar(f"train {task_name} {model_name}", settings.steps) as progress:
        progress.advance(0, start)
        for step in range(start, settings.steps):
            chosen = batch_indices(settings.seed, step, len(images), settings.batch_size)
            for part in range(accumulation):
                offset = (part * world + rank) * micro
                batch = images[torch.from_numpy(chosen[offset : offset + micro]).to(accelerator.device)]
                generator = torch.Generator().manual_seed(seed_for(settings.seed, step, rank, part))
                with accelerator.autocast():
                    loss = process.loss(network, batch, generator)
                if part < accumulation - 1:
                    with accelerator.no_sync(network):
                        accelerator.backward(loss / accumulation)
                else:
                    accelerator.backward(loss / accumulation)
                running_loss += loss.detach()
                running_count += 1
                first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step, first_bad_step)
            accelerator.clip_grad_norm_(network.parameters(), settings.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(bare, step)
            done = step + 1
            if done % settings.log_every == 0 or done == settings.steps or done % settings.checkpoint_every == 0:
                value = flush_losses(done)
                rate = (done - start) * settings.batch_size / (time.perf_counter() - started)
                progress.update(0, status=f"loss {value:.4f}  {rate:,.0f} img/s")
            if done % settings.checkpoint_every == 0 or done == settings.steps:
                checkpoint(done)
            progress.advance(0)
            if on_step is not None:
                on_step(done)
    seconds = time.perf_counter() - started

    summary = {
        "task": task_name,
        "model": model_name,
        "size": size,
        "model_settings": params.train_settings_for(model_name).model_dump(),
        "network": params.network.model_dump(),
        "train": params.train.model_dump(),
        "steps": settings.steps,
        "resumed_from_step": start if resumed_from else None,
        "processes": world,
        "seconds": seconds,
        "images_per_second": (settings.steps - start) * settings.batch_size / seconds if settings.steps > start else None,
        "final_loss": losses[-1][1] if losses else None,
    }
    if accelerator.is_main_process:
        exported = copy.deepcopy(bare).float()
        ema.copy_to(exported)
        with replace_directory(paths.model) as staging:
            family.save_network(exported, staging)
            write_json_atomic(staging / MODEL_INFO_FILE, summary)
        csv = "step,loss\n" + "".join(f"{step},{loss:.6g}\n" for step, loss in losses)
        write_bytes_atomic(paths.loss_curve, csv.encode())
    accelerator.wait_for_everyone()
    return summary
