"""Guidance overhead: sampling time of each strategy against unguided sampling, side by side.

    python benchmarks/guidance.py [--samples 128] [--rounds 3] [--model ddpm-unet] [--json out.json]

Every strategy samples the same number of kept images with the same network, sampler and steps
(the quick profile's), alternating strategy by strategy for ``--rounds`` rounds so that a shared
machine's noise hits them alike; the best round of each is divided by the best round of ``none``.
The network and the rule classifier are freshly initialised: their cost, not their skill, is
measured. Filters draw ``oversample`` times more images, so their ratio is about that factor.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from rulekit.classifier.network import build_classifier, save_classifier
from rulekit.guidance.base import GuidanceContext
from rulekit.params import Params, load_params
from rulekit.registry import get_registry
from rulekit.sampling import sample_images
from rulekit.storage import write_json_atomic

#: (label, strategy, settings overriding params.yaml's): both ways of taking the rule's gradient.
CASES = (
    ("none", "none", {}),
    ("classifier", "classifier", {}),
    ("rule-gradient", "rule-gradient", {"through_network": False}),
    ("rule-gradient, through the network", "rule-gradient", {"through_network": True}),
    ("filter-rule", "filter-rule", {}),
    ("filter-classifier", "filter-classifier", {}),
)
#: Cases whose sampling time should stay within ``OVERHEAD_TARGET`` times unguided sampling's.
TARGETED = ("classifier", "rule-gradient")
OVERHEAD_TARGET = 2.5


def measure(samples: int, rounds: int, model: str, task_name: str, params: Params) -> list[dict]:
    """Best sampling seconds of each case over ``rounds`` alternating rounds, with ratios to none."""
    registry = get_registry()
    family = registry.get("model", model)
    process = family.process(params.train_settings_for(model), params.sampler_settings_for(model))
    size = params.generate.size
    torch.manual_seed(0)
    network = family.build_network(params.network, size)
    task = registry.task(task_name)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        classifier_dir = Path(folder) / model
        settings = params.classifier
        save_classifier(build_classifier(size, settings.channels, settings.hidden), classifier_dir, {"task": task_name})
        context = GuidanceContext(task=task, process=process, size=size, classifier_dir=classifier_dir)
        runs = {}
        for label, name, overrides in CASES:
            guidance = registry.get("guidance", name)
            configured = params.guidance_settings_for(name).model_copy(update=overrides)
            runs[label] = (name, guidance.prepare(configured, context))
        for _ in range(rounds):
            for label, (name, run) in runs.items():
                _, seconds = sample_images(process, network, run, samples, size, params.evaluate.batch_size, 0, guidance_name=name)
                best[label] = min(best.get(label, float("inf")), seconds)
    return [
        {
            "case": label,
            "oversample": runs[label][1].oversample,
            "seconds": best[label],
            "images_per_second": samples * runs[label][1].oversample / best[label],
            "ratio_to_none": best[label] / best["none"],
            "meets_target": best[label] / best["none"] <= OVERHEAD_TARGET if label in TARGETED else None,
        }
        for label, _, _ in CASES
    ]


def table(rows: list[dict], model: str, samples: int, rounds: int, steps: int) -> Table:
    """The rows of ``measure`` as a rich table; targeted cases show whether they meet the target."""
    table = Table(title=f"guidance overhead, {model}, {steps} steps, {samples} kept samples, best of {rounds}")
    # Wide enough for every strategy's name; only the longer case descriptions wrap.
    table.add_column("case", min_width=max(len(name) for _, name, _ in CASES))
    for column in ("drawn/kept", "seconds", "drawn img/s", "× none", f"≤ {OVERHEAD_TARGET}×"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        verdict = ("yes" if row["meets_target"] else "no") if row["meets_target"] is not None else ""
        table.add_row(
            row["case"],
            str(row["oversample"]),
            f"{row['seconds']:.2f}",
            f"{row['images_per_second']:.1f}",
            f"{row['ratio_to_none']:.2f}×",
            verdict,
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="ddpm-unet")
    parser.add_argument("--task", default="bars")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    params = load_params(args.params)
    rows = measure(args.samples, args.rounds, args.model, args.task, params)
    steps = params.sampler_settings_for(args.model).steps
    Console().print(table(rows, args.model, args.samples, args.rounds, steps))
    if args.json:
        write_json_atomic(args.json, rows)


if __name__ == "__main__":
    main()
