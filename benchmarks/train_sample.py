"""Training and sampling throughput: ``rulekit train`` against a plain loop, side by side.

    python benchmarks/train_sample.py [--steps 150] [--rounds 2] [--task bars]

The plain reference loop is what anyone would write in a few lines: the same diffusers UNet,
batch size and AdamW, DDPM noise and an MSE loss, no EMA, checkpoints or bookkeeping. The two
alternate, ``--rounds`` times each, on the quick profile's settings, so that a shared machine's
noise hits both alike; the best round of each is compared. Sampling throughput is DDIM with the
quick profile's steps (and the flow family's solver).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from rulekit.dataset import read_dataset
from rulekit.guidance.base import GuidedRun
from rulekit.models.unet import build_unet
from rulekit.params import parse_params
from rulekit.registry import get_registry
from rulekit.sampling import sample_images
from rulekit.stages.generate import generate
from rulekit.storage import write_json_atomic
from rulekit.training import TrainingPaths, train_model

#: The model families whose sampling is measured.
MODELS = ("ddpm-unet", "flow-unet")


def plain_loop(images: np.ndarray, params, steps: int) -> float:
    """Images per second of a minimal DDPM training loop with the same network and batch."""
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    network = build_unet(params.network, images.shape[-1])
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.train.learning_rate)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    data = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)
    batch = params.train.batch_size
    start = time.perf_counter()
    for step in range(steps):
        index = torch.randint(0, len(data), (batch,))
        clean = data[index]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, 1000, (batch,))
        loss = torch.nn.functional.mse_loss(network(scheduler.add_noise(clean, noise, timesteps), timesteps).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def rulekit_loop(root: Path, task: str, model: str, raw_params: dict, steps: int, run_name: str) -> float:
    """Images per second of ``train_model`` over its training loop, from a fresh run in ``root/run_name``."""
    train = {**raw_params["train"], "steps": steps, "warmup_steps": min(10, steps)}
    params = parse_params({**raw_params, "train": train})
    run = root / run_name
    paths = TrainingPaths(root / "data" / task, run / "model", run / "checkpoints", run / "loss.csv")
    return train_model(task, model, params, paths)["images_per_second"]


@contextlib.contextmanager
def prepared_data(raw_params: dict, task: str) -> Iterator[Path]:
    """A temporary folder whose ``data/TASK`` holds the task's data generated with ``raw_params``."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate(task, parse_params(raw_params), root / "data" / task)
        yield root


def measure_training(root: Path, task: str, raw_params: dict, steps: int, rounds: int) -> dict:
    """Best-round images per second of the plain loop and of ``rulekit train``, alternating."""
    params = parse_params(raw_params)
    images = read_dataset(root / "data" / task).images
    plain, framework = [], []
    for round_index in range(rounds):
        plain.append(plain_loop(images, params, steps))
        framework.append(rulekit_loop(root, task, "ddpm-unet", raw_params, steps, f"fp32-{round_index}"))
    return {
        "task": task,
        "size": int(images.shape[-1]),
        "batch_size": params.train.batch_size,
        "steps": steps,
        "rounds": rounds,
        "plain_img_per_s": max(plain),
        "rulekit_img_per_s": max(framework),
        "rulekit_to_plain": max(framework) / max(plain),
    }


def measure_sampling(root: Path, task: str, raw_params: dict, samples: int, models=MODELS) -> dict:
    """Images per second of unguided sampling for each model family, with its sampler's steps."""
    params = parse_params(raw_params)
    size = read_dataset(root / "data" / task).size
    registry = get_registry()
    families = {}
    for model in models:
        # Sampling speed does not depend on how well the network was trained: a short run serves.
        rulekit_loop(root, task, model, raw_params, 10, f"sampler-{model}")
        family = registry.get("model", model)
        process = family.process(params.train_settings_for(model), params.sampler_settings_for(model))
        network = family.load_network(root / f"sampler-{model}" / "model")
        _, seconds = sample_images(process, network, GuidedRun(), samples, size, params.sample.batch_size, 0)
        families[model] = {"steps": len(process.sampling_times()), "seconds": seconds, "img_per_s": samples / seconds}
    return {"task": task, "size": size, "n_samples": samples, "batch_size": params.sample.batch_size, "families": families}


def training_table(results: dict) -> Table:
    """The result of ``measure_training`` as a rich table."""
    title = (
        f"training throughput ({results['task']}, {results['size']} px, batch {results['batch_size']}, "
        f"{results['steps']} steps, best of {results['rounds']})"
    )
    table = Table(title=title)
    table.add_column("loop")
    table.add_column("img/s", justify="right")
    table.add_column("× plain", justify="right")
    table.add_row("plain reference loop", f"{results['plain_img_per_s']:,.0f}", "1.00")
    table.add_row("rulekit train", f"{results['rulekit_img_per_s']:,.0f}", f"{results['rulekit_to_plain']:.2f}")
    return table


def sampling_table(results: dict) -> Table:
    """The result of ``measure_sampling`` as a rich table."""
    table = Table(title=f"sampling throughput ({results['task']}, {results['size']} px, {results['n_samples']} samples, unguided)")
    for column in ("model", "steps", "seconds", "img/s"):
        table.add_column(column, justify="right")
    for model, row in results["families"].items():
        table.add_row(model, str(row["steps"]), f"{row['seconds']:.2f}", f"{row['img_per_s']:,.1f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="bars")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()

    import yaml

    raw_params = yaml.safe_load(Path(args.params).read_text())
    with prepared_data(raw_params, args.task) as root:
        training = measure_training(root, args.task, raw_params, args.steps, args.rounds)
        sampling = measure_sampling(root, args.task, raw_params, args.samples)
    console = Console()
    console.print(training_table(training))
    console.print(sampling_table(sampling))
    if args.json_path:
        write_json_atomic(args.json_path, {"train": training, "sample": sampling})


if __name__ == "__main__":
    main()
