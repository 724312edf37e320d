"""The one sampling loop: any model family, any guidance strategy, batched and seeded."""

from __future__ import annotations

import time

import numpy as np

from rulekit.errors import RulekitError
from rulekit.guidance.base import GuidedRun
from rulekit.models.base import DiffusionProcess
from rulekit.progress import progress_bar


class SamplingDiverged(RulekitError):
    """Sampling produced values that are not finite numbers."""


def sample_images(
    process: DiffusionProcess,
    network,
    guidance: GuidedRun,
    n_images: int,
    size: int,
    batch_size: int,
    seed: int,
    label: str = "sample",
    guidance_name: str = "none",
) -> tuple[np.ndarray, float]:
    """Draw ``n_images`` images (float32 (n, size, size) in [0, 1]) and the seconds it took.

    Batch ``b`` starts from noise seeded by (seed, b), so a sample does not depend on the device
    or on how many were drawn before it in other runs of the same settings. With a selecting
    strategy, ``guidance.oversample`` times more images are drawn and the kept ones returned.
    """
    import torch

    from rulekit.training import seed_for

    drawn = n_images * guidance.oversample
    device = next(network.parameters()).device
    network.eval()
    times = process.sampling_times()

    def output_at(x, time_point):
        x = x.detach()
        if guidance.through_network:
            with torch.enable_grad():
                x_tracked = x.requires_grad_(True)
                prediction = process.predict(network, x_tracked, time_point)
                score = guidance.score(x_tracked, time_point, prediction, process)
            x = x.detach()
        else:
            with torch.no_grad():
                prediction = process.predict(network, x, time_point)
            score = guidance.score(x, time_point, prediction, process)
        output = prediction.output.detach()
        if score is None:
            return output
        with torch.no_grad():
            return process.add_score(output, x, time_point, score.detach())

    batches = []
    started = time.perf_counter()
    n_batches = -(-drawn // batch_size)
    with progress_bar(label, n_batches * len(times)) as progress:
        for batch_index in range(n_batches):
            count = min(batch_size, drawn - batch_index * batch_size)
            generator = torch.Generator().manual_seed(seed_for(seed, batch_index))
            x = process.initial_noise((count, 1, size, size), generator).to(device)
            for index in range(len(times)):
                x = process.step(x, index, output_at, generator).detach()
                if not torch.isfinite(x).all():
                    raise SamplingDiverged(
                        f"sampling with guidance {guidance_name!r} ({guidance.describe()}) produced non-finite "
                        f"values at step {index + 1} of {len(times)}; no samples were written"
                    )
                progress.advance(0)
            batches.append(((x.clamp(-1, 1) + 1) / 2).squeeze(1).float().cpu().numpy())
            rate = (batch_index * batch_size + count) / (time.perf_counter() - started)
            progress.update(0, status=f"{rate:,.1f} img/s")
    images = np.concatenate(batches)
    seconds = time.perf_counter() - started
    if guidance.oversample > 1:
        images = images[guidance.select(images, n_images)]
    return images.astype(np.float32, copy=False), seconds
