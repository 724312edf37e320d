"""Model families: their parameterisations are consistent, and every family trains and samples."""

import numpy as np
import pytest
import torch

from rulekit.guidance.base import GuidedRun
from rulekit.models.ddpm import DDPMSamplerSettings, DDPMTrainSettings
from rulekit.models.flow import FlowSamplerSettings, FlowTrainSettings
from rulekit.params import parse_params
from rulekit.registry import get_registry
from rulekit.sampling import SamplingDiverged, sample_images

from conftest import smoke_params


def ddpm_process(prediction_type: str, scheduler: str = "ddim"):
    family = get_registry().get("model", "ddpm-unet")
    return family.process(
        DDPMTrainSettings(prediction_type=prediction_type, num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        DDPMSamplerSettings(scheduler=scheduler, steps=10, clip_sample=True),
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddpm_score_enters_every_parameterisation_as_the_same_noise_shift(prediction_type):
    process = ddpm_process(prediction_type)
    generator = torch.Generator().manual_seed(0)
    x, output, score = (torch.randn((3, 1, 8, 8), generator=generator) for _ in range(3))
    time = 500
    alpha_bar = process.alphas_cumprod[time]
    epsilon, _ = process._to_epsilon_and_clean(output, x, time)
    guided = process.add_score(output, x, time, score)
    guided_epsilon, guided_clean = process._to_epsilon_and_clean(guided, x, time)
    torch.testing.assert_close(guided_epsilon, epsilon - (1 - alpha_bar).sqrt() * score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(process.add_score(output, x, time, torch.zeros_like(score)), output, rtol=1e-5, atol=1e-5)
    # x = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε holds for the guided pair as for any consistent pair.
    torch.testing.assert_close(alpha_bar.sqrt() * guided_clean + (1 - alpha_bar).sqrt() * guided_epsilon, x, rtol=1e-4, atol=1e-4)


def test_flow_score_becomes_a_velocity_shift():
    family = get_registry().get("model", "flow-unet")
    process = family.process(FlowTrainSettings(time_sampling="uniform"), FlowSamplerSettings(solver="euler", steps=4))
    output, x, score = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    # v' = v − t / (1 − t) · s: at t = 0.75 the factor is 3.
    torch.testing.assert_close(process.add_score(output, x, 0.75, score), torch.full((1, 1, 2, 2), 1.0 - 6.0))
    assert process.sampling_times() == [1.0, 0.75, 0.5, 0.25]


def test_ddim_schedule_runs_from_pure_noise_down():
    process = ddpm_process("epsilon")
    times = process.sampling_times()
    assert len(times) == 10 and times[0] == 999 and times == sorted(times, reverse=True)


class ConstantNetwork(torch.nn.Module):
    """A stand-in network whose output is a fixed value, to test the loops without training."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x, timesteps):
        class Output:
            sample = self.value * torch.ones_like(x)

        return Output()


@pytest.mark.parametrize("model", ["ddpm-unet", "flow-unet"])
def test_sampling_is_seeded_and_bounded(model):
    params = parse_params(smoke_params())
    family = get_registry().get("model", model)
    process = family.process(params.train_settings_for(model), params.sampler_settings_for(model))
    network = family.build_network(params.network, 16)
    first, _ = sample_images(process, network, GuidedRun(), 6, 16, 4, seed=3)
    second, _ = sample_images(process, network, GuidedRun(), 6, 16, 4, seed=3)
    other, _ = sample_images(process, network, GuidedRun(), 6, 16, 4, seed=4)
    assert first.shape == (6, 16, 16) and first.dtype == np.float32
    assert np.isfinite(first).all() and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_non_finite_sampling_is_reported_with_its_step():
    params = parse_params(smoke_params())
    family = get_registry().get("model", "flow-unet")
    process = family.process(params.train_settings_for("flow-unet"), params.sampler_settings_for("flow-unet"))
    with pytest.raises(SamplingDiverged, match="non-finite values at step 1 of 5"):
        sample_images(process, ConstantNetwork(float("inf")), GuidedRun(), 2, 8, 2, seed=0)


@pytest.mark.parametrize("model", ["ddpm-unet", "flow-unet"])
def test_every_family_learns_something_in_a_few_steps(model):
    params = parse_params(smoke_params())
    family = get_registry().get("model", model)
    process = family.process(params.train_settings_for(model), params.sampler_settings_for(model))
    torch.manual_seed(0)
    network = family.build_network(params.network, 16)
    task = get_registry().task("bars")
    clean = torch.from_numpy(task.render(task.sample(np.random.default_rng(0), 64), 16)).unsqueeze(1) * 2 - 1
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3)

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(np.mean([process.loss(network, clean, torch.Generator().manual_seed(100 + i)).item() for i in range(8)]))

    before = held_out_loss()
    for step in range(60):
        loss = process.loss(network, clean, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out_loss() < 0.7 * before
