"""``flow-unet``: the same UNet trained by flow matching on a straight path (rectified flow)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rulekit.hookspecs import hookimpl
from rulekit.models.base import DiffusionProcess, ModelFamily, OutputAt, Prediction
from rulekit.params import Section

#: The network's time embedding was designed for diffusion timesteps; flow times in [0, 1] are
#: scaled to the same range so one UNet definition serves both families.
TIME_SCALE = 1000.0
#: Guidance converts a score into a velocity with a factor t / (1 − t); near pure noise that
#: factor diverges, so it is evaluated no closer to t = 1 than this.
MAX_GUIDED_TIME = 0.999


class FlowTrainSettings(Section):
    """How ``flow-unet`` trains."""

    time_sampling: Literal["uniform", "logit_normal"]


class FlowSamplerSettings(Section):
    """How ``flow-unet`` samples."""

    solver: Literal["euler", "heun"]
    steps: int = Field(ge=1, le=100_000)


class FlowProcess(DiffusionProcess):
    """x_t = (1 − t)·x0 + t·ε with t = 1 pure noise; the network predicts the velocity ε − x0."""

    def __init__(self, train: FlowTrainSettings, sampler: FlowSamplerSettings) -> None:
        self.time_sampling = train.time_sampling
        self.solver = sampler.solver
        self.steps = sampler.steps

    def loss(self, network, clean, generator):
        import torch
        import torch.nn.functional as F

        n = clean.shape[0]
        if self.time_sampling == "uniform":
            times = torch.rand((n,), generator=generator)
        else:
            times = torch.sigmoid(torch.randn((n,), generator=generator))
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        times = times.to(clean.device)
        t = times.view(-1, 1, 1, 1)
        noisy = (1 - t) * clean + t * noise
        velocity = network(noisy, times * TIME_SCALE).sample
        return F.mse_loss(velocity.float(), (noise - clean).float())

    def noised(self, clean, level, generator):
        import torch

        noise = torch.randn(clean.shape, generator=generator).to(clean.device, clean.dtype)
        if isinstance(level, torch.Tensor):
            levels = level.to(clean.device, clean.dtype)
            return (1 - levels.view(-1, 1, 1, 1)) * clean + levels.view(-1, 1, 1, 1) * noise, levels
        return (1 - level) * clean + level * noise, float(level)

    def level(self, time):
        return float(time)

    def sampling_times(self):
        return [1.0 - index / self.steps for index in range(self.steps)]

    def _velocity(self, network, x, time: float):
        import torch

        times = torch.full((x.shape[0],), time * TIME_SCALE, device=x.device, dtype=x.dtype)
        return network(x, times).sample

    def predict(self, network, x, time):
        velocity = self._velocity(network, x, time)
        return Prediction(output=velocity, clean_estimate=self.clean_estimate(x, time, velocity))

    def clean_estimate(self, x, time, output):
        return x - time * output

    def add_score(self, output, x, time, score):
        t = min(float(time), MAX_GUIDED_TIME)
        return output - t / (1.0 - t) * score

    def step(self, x, index: int, output_at: OutputAt, generator):
        time = 1.0 - index / self.steps
        next_time = 1.0 - (index + 1) / self.steps
        velocity = output_at(x, time)
        euler = x + (next_time - time) * velocity
        if self.solver == "euler" or next_time <= 0.0:
            return euler
        corrected = output_at(euler, next_time)
        return x + (next_time - time) * (velocity + corrected) / 2


class FlowUNet(ModelFamily):
    name = "flow-unet"
    description = "diffusers UNet2DModel trained by flow matching (rectified flow, velocity target); Euler or Heun sampling."
    train_settings = FlowTrainSettings
    sampler_settings = FlowSamplerSettings

    def process(self, train_settings, sampler_settings) -> FlowProcess:
        return FlowProcess(train_settings, sampler_settings)


@hookimpl
def rulekit_models() -> list[ModelFamily]:
    return [FlowUNet()]
