"""The built-in probe inputs: raw pixels, pixels noised to a diffusion level, the UNet's
mid-block activations at that level, and the rule classifier's penultimate features."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from rulekit.dataset import to_model_range
from rulekit.hookspecs import hookimpl
from rulekit.probes.base import ProbeContext, ProbeError, ProbeInput

#: Images per network forward pass; bounds memory, not results (noise is drawn for all at once).
FORWARD_BATCH = 256
#: Threads of a forward pass on the CPU. The passes are many small operators on small images;
#: sharing each over threads saved little when the machine was idle and made them ten times
#: slower when another process held a core, as every operator waits for the slowest thread.
CPU_FORWARD_THREADS = 1


class _MidBlockReached(Exception):
    """Raised by the capture hook to end a forward pass once the mid block has run."""


def noise_seed(seed: int, level: float) -> int:
    """The torch seed of the noise at ``level``: one stream per (seed, level), shared by every
    input, so ``noised-pixels`` and ``unet-mid`` see the same noisy images."""
    entropy = np.random.SeedSequence([seed, int(round(level * 1e9))])
    return int(entropy.generate_state(1, dtype=np.uint64)[0])


def noised_images(images: np.ndarray, level: float | None, context: ProbeContext, user: str):
    """The images scaled to [-1, 1] and noised to ``level`` by the model's process, as a torch
    tensor (n, 1, size, size), with the ``time`` its ``predict`` takes."""
    import torch

    if level is None or not 0.0 <= level <= 1.0:
        raise ProbeError(f"probe input {user!r} needs a noise level in [0, 1], got {level!r}")
    process = context.require_process(user)
    clean = to_model_range(np.asarray(images, dtype=np.float32))
    generator = torch.Generator().manual_seed(noise_seed(context.seed, level))
    return process.noised(clean, float(level), generator)


@contextlib.contextmanager
def _forward_threads(device) -> Iterator[None]:
    import torch

    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, CPU_FORWARD_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _flat(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.reshape(len(rows), -1), dtype=np.float32)


class Pixels(ProbeInput):
    name = "pixels"
    description = "The clean image's pixels, flattened; no model involved."
    uses_noise_level = False

    def features(self, images, level, context):
        return _flat(np.asarray(images))


class NoisedPixels(ProbeInput):
    name = "noised-pixels"
    description = "The pixels noised to a level by the model's own noise schedule, flattened."
    uses_noise_level = True
    # The noise schedule, not the weights, is what this input takes from the model.
    needs_model = True

    def features(self, images, level, context):
        noisy, _ = noised_images(images, level, context, self.name)
        return _flat(noisy.detach().cpu().numpy())


class UNetMid(ProbeInput):
    name = "unet-mid"
    description = "The network's mid-block activations on the noised pixels, flattened."
    uses_noise_level = True
    needs_model = True

    def features(self, images, level, context):
        import torch

        network = context.require_network(self.name)
        process = context.require_process(self.name)
        noisy, time = noised_images(images, level, context, self.name)
        if getattr(network, "mid_block", None) is None:
            raise ProbeError(f"probe input {self.name!r} needs a network with a mid block (a diffusers UNet2DModel)")
        weights = next(network.parameters())
        captured: list[torch.Tensor] = []

        def capture(module, args, output):
            captured.append(output.detach().float().cpu())
            # The up path costs most of a forward pass at these sizes and nothing of it is used.
            raise _MidBlockReached

        handle = network.mid_block.register_forward_hook(capture)
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad(), _forward_threads(weights.device):
                for start in range(0, len(noisy), FORWARD_BATCH):
                    batch = noisy[start : start + FORWARD_BATCH].to(weights.device, weights.dtype)
                    try:
                        process.predict(network, batch, time)
                    except _MidBlockReached:
                        pass
        finally:
            handle.remove()
            network.train(was_training)
        if not captured:
            return np.zeros((0, 0), dtype=np.float32)
        return _flat(torch.cat(captured).numpy())


class RuleClassifierFeatures(ProbeInput):
    name = "rule-classifier"
    description = (
        "The rule classifier's penultimate features on the noised pixels: does the classifier that "
        "guides sampling see the violation at all?"
    )
    uses_noise_level = True
    needs_model = True
    needs_classifier = True

    def features(self, images, level, context):
        import torch

        classifier = context.require_classifier(self.name)
        noisy, _ = noised_images(images, level, context, self.name)
        levels = torch.full((len(noisy),), float(level))
        was_training = classifier.training
        classifier.eval()
        try:
            with torch.no_grad(), _forward_threads(noisy.device):
                rows = [
                    classifier.features(noisy[start : start + FORWARD_BATCH], levels[start : start + FORWARD_BATCH])
                    for start in range(0, len(noisy), FORWARD_BATCH)
                ]
        finally:
            classifier.train(was_training)
        return _flat(torch.cat(rows).numpy()) if rows else np.zeros((0, 0), dtype=np.float32)


@hookimpl
def rulekit_probe_inputs() -> list[ProbeInput]:
    return [Pixels(), NoisedPixels(), UNetMid(), RuleClassifierFeatures()]
