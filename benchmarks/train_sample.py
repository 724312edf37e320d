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
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from rulekit.dataset import read_dataset
from rulekit.guidance.base import GuidedRun
from rulekit.models.unet import build_unet
from rulekit.params import load_params, parse_params
from rulekit.registry import get_registry
from rulekit.sampling import sample_images
from rulekit.stages.generate import generate
from rulekit.training import TrainingPaths, train_model


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
    params = load_params(args.params)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate(args.task, params, root / "data" / args.task)
        images = read_dataset(root / "data" / args.task).images
        plain, framework = [], []
        for round_index in range(args.rounds):
            plain.append(plain_loop(images, params, args.steps))
            framework.append(rulekit_loop(root, args.task, "ddpm-unet", raw_params, args.steps, f"fp32-{round_index}"))
        results["train_plain_img_per_s"] = max(plain)
        results["train_rulekit_img_per_s"] = max(framework)
        results["train_ratio"] = max(framework) / max(plain)
        registry = get_registry()
        for model in ("ddpm-unet", "flow-unet"):
            # Sampling speed does not depend on how well the network was trained: a short run serves.
            rulekit_loop(root, args.task, model, raw_params, 10, f"sampler-{model}")
            family = registry.get("model", model)
            process = family.process(params.train_settings_for(model), params.sampler_settings_for(model))
            network = family.load_network(root / f"sampler-{model}" / "model")
            _, seconds = sample_images(process, network, GuidedRun(), args.samples, images.shape[-1], params.sample.batch_size, 0)
            results[f"sample_{model}_img_per_s"] = args.samples / seconds
            results[f"sample_{model}_steps"] = len(process.sampling_times())

    table = Table(title=f"training and sampling throughput ({args.task}, {images.shape[-1]} px, best of {args.rounds})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("train: plain loop (img/s)", f"{results['train_plain_img_per_s']:,.0f}")
    table.add_row("train: rulekit train (img/s)", f"{results['train_rulekit_img_per_s']:,.0f}")
    table.add_row("train: rulekit / plain", f"{results['train_ratio']:.2f}×")
    for model in ("ddpm-unet", "flow-unet"):
        table.add_row(f"sample: {model}, {results[f'sample_{model}_steps']} steps (img/s)", f"{results[f'sample_{model}_img_per_s']:,.1f}")
    Console().print(table)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
