"""``ddpm-unet``: a UNet trained by denoising score matching through a diffusers noise scheduler."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rulekit.hookspecs import hookimpl
from rulekit.models.base import DiffusionProcess, ModelFamily, OutputAt, Prediction
from rulekit.params import Section


class DDPMTrainSettings(Section):
    """How ``ddpm-unet`` trains."""

    prediction_type: Literal["epsilon", "sample", "v_prediction"]
    num_train_timesteps: int = Field(ge=2, le=100_000)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"]


class DDPMSamplerSettings(Section):
    """How ``ddpm-unet`` samples."""

    scheduler: Literal["ddim", "ddpm"]
    steps: int = Field(ge=1, le=100_000)
    clip_sample: bool


class DDPMProcess(DiffusionProcess):
    """DSM with epsilon, x0 or v prediction; sampling with DDIM (deterministic) or DDPM."""

    def __init__(self, train: DDPMTrainSettings, sampler: DDPMSamplerSettings) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        if sampler.steps > train.num_train_timesteps:
            from rulekit.errors import ParamsError

            raise ParamsError(
                f"sampler_settings.ddpm-unet.steps: {sampler.steps} exceeds the model's "
                f"{train.num_train_timesteps} training timesteps"
            )
        common = dict(
            num_train_timesteps=train.num_train_timesteps,
            beta_schedule=train.beta_schedule,
            prediction_type=train.prediction_type,
            clip_sample=sampler.clip_sample,
            timestep_spacing="trailing",
        )
        self.prediction_type = train.prediction_type
        self.noise_schedule = DDPMScheduler(**common)
        self.alphas_cumprod = self.noise_schedule.alphas_cumprod
        if sampler.scheduler == "ddim":
            self.sampler = DDIMScheduler(**common, set_alpha_to_one=False)
        else:
            self.sampler = DDPMScheduler(**common)
        self.sampler.set_timesteps(sampler.steps)
        self.uses_ddim = sampler.scheduler == "ddim"
        self.times = [int(t) for t in self.sampler.timesteps]

    def loss(self, network, clean, generator):
        import torch
        import torch.nn.functional as F

        n = clean.shape[0]
        timesteps = torch.randint(0, self.noise_schedule.config.num_train_timesteps, (n,), generator=generator)
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        timesteps = timesteps.to(clean.device)
        noisy = self.noise_schedule.add_noise(clean, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "sample":
            target = clean
        else:
            target = self.noise_schedule.get_velocity(clean, noise, timesteps)
        return F.mse_loss(network(noisy, timesteps).sample.float(), target.float())

    def noised(self, clean, level, generator):
        import torch

        last = self.noise_schedule.config.num_train_timesteps - 1
        noise = torch.randn(clean.shape, generator=generator).to(clean.device, clean.dtype)
        if isinstance(level, torch.Tensor):
            timesteps = torch.round(level.double() * last).long().to(clean.device)
            return self.noise_schedule.add_noise(clean, noise, timesteps), timesteps
        time = int(round(level * last))
        timesteps = torch.full((clean.shape[0],), time, dtype=torch.long, device=clean.device)
        return self.noise_schedule.add_noise(clean, noise, timesteps), time

    def level(self, time):
        return float(time) / (self.noise_schedule.config.num_train_timesteps - 1)

    def sampling_times(self):
        return self.times

    def _coefficients(self, x, time: int):
        alpha_bar = self.alphas_cumprod[time].to(x.device, x.dtype)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def _to_epsilon_and_clean(self, output, x, time):
        signal, noise = self._coefficients(x, time)
        if self.prediction_type == "epsilon":
            return output, (x - noise * output) / signal
        if self.prediction_type == "sample":
            return (x - signal * output) / noise, output
        clean = signal * x - noise * output
        return signal * output + noise * x, clean

    def predict(self, network, x, time):
        import torch

        timesteps = torch.full((x.shape[0],), time, device=x.device, dtype=torch.long)
        output = network(x, timesteps).sample
        return Prediction(output=output, clean_estimate=self.clean_estimate(x, time, output))

    def clean_estimate(self, x, time, output):
        return self._to_epsilon_and_clean(output, x, time)[1]

    def add_score(self, output, x, time, score):
        signal, noise = self._coefficients(x, time)
        epsilon, _ = self._to_epsilon_and_clean(output, x, time)
        epsilon = epsilon - noise * score
        if self.prediction_type == "epsilon":
            return epsilon
        clean = (x - noise * epsilon) / signal
        if self.prediction_type == "sample":
            return clean
        return signal * epsilon - noise * clean

    def step(self, x, index: int, output_at: OutputAt, generator):
        time = self.times[index]
        output = output_at(x, time)
        if self.uses_ddim:
            return self.sampler.step(output, time, x, eta=0.0, generator=generator).prev_sample
        return self.sampler.step(output, time, x, generator=generator).prev_sample


class DDPMUNet(ModelFamily):
    name = "ddpm-unet"
    description = "diffusers UNet2DModel trained by denoising score matching (epsilon, x0 or v); DDIM or DDPM sampling."
    train_settings = DDPMTrainSettings
    sampler_settings = DDPMSamplerSettings

    def process(self, train_settings, sampler_settings) -> DDPMProcess:
        return DDPMProcess(train_settings, sampler_settings)


@hookimpl
def rulekit_models() -> list[ModelFamily]:
    return [DDPMUNet()]
