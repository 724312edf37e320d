"""The ``rulekit`` command line: one sub-command per pipeline stage, plus plugin listing.

User mistakes (unknown names, bad params, bad files) print one line starting with ``error:`` to
stderr and exit with code 2, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rulekit.errors import RulekitError

try:  # recent typer releases vendor click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    import click.exceptions as click_exceptions

app = typer.Typer(
    name="rulekit",
    help="Measure whether generative models learn the hidden rules between image features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file to read.")


@app.command("list-plugins")
def list_plugins(
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="Show one kind: task, model, guidance, metric or probe-input."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """List every registered task, model, guidance strategy and metric, and any plugin that failed."""
    from rulekit.registry import check_kind, get_registry

    if kind is not None:
        check_kind(kind)
    registry = get_registry()
    # Failed plugins stay visible under any filter: a missing row must never look like success.
    rows = [entry for entry in registry.entries if kind is None or entry.kind == kind or entry.status == "failed"]
    if as_json:
        sys.stdout.write(json.dumps([entry.as_dict() for entry in rows], indent=2) + "\n")
        return
    table = Table(title="rulekit plugins", show_lines=False)
    for column in ("kind", "name", "plugin", "distribution", "version", "description"):
        table.add_column(column, overflow="fold")
    for entry in rows:
        # Plugin text is data, not markup: a '[' in a third party's error must print as it is.
        if entry.status == "ok":
            text = escape(entry.description)
        else:
            text = f"[red]{entry.status.upper()}[/red]: {escape(entry.error)}"
        table.add_row(*(escape(value) for value in (entry.kind, entry.name, entry.plugin, entry.distribution, entry.version)), text)
    Console().print(table)


@app.command()
def generate(
    task: str = typer.Argument(..., help="The task to generate data for."),
    params: Path = PARAMS_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: data/TASK)."),
) -> None:
    """Draw a task's rule-abiding training images and write them to data/TASK."""
    from rulekit.params import load_params
    from rulekit.stages.generate import generate as run_generate

    _check_names(task)
    settings = load_params(params)
    destination = out if out is not None else Path("data") / task
    meta = run_generate(task, settings, destination)
    floor = meta["noise_floor"]
    _report(
        f"wrote {destination}: {meta['n_images']} images of {meta['size']}×{meta['size']}, "
        f"noise floor: max feature error {floor['max_feature_error']:.2e}, residual std {floor['residual_std']:.2e}"
    )


MODEL_OPTION = typer.Option(None, "--model", "-m", help="The model family (default: every family in params.yaml's models).")


@app.command()
def train(
    task: str = typer.Argument(..., help="The task whose data to train on (data/TASK)."),
    model: Optional[str] = MODEL_OPTION,
    params: Path = PARAMS_OPTION,
) -> None:
    """Train model families on a task's data; resumes from the newest checkpoint of the same run."""
    from rulekit.params import load_params
    from rulekit.stages.train import train as run_train

    _check_names(task, model)
    settings = load_params(params)
    for name in _chosen(model, settings.models):
        summary = run_train(task, name, settings)
        _report(
            f"trained {name} on {task}: {summary['steps']} steps in {summary['seconds']:.1f} s"
            + (f" (resumed at step {summary['resumed_from_step']})" if summary["resumed_from_step"] else "")
            + (f", final loss {summary['final_loss']:.4f}" if summary["final_loss"] is not None else "")
        )


@app.command()
def sample(
    task: str = typer.Argument(..., help="The task whose trained model to sample from."),
    model: Optional[str] = MODEL_OPTION,
    guidance: str = typer.Option("none", "--guidance", "-g", help="The guidance strategy."),
    params: Path = PARAMS_OPTION,
) -> None:
    """Sample from trained models, measure the samples and write samples/TASK/MODEL/GUIDANCE."""
    from rulekit.params import load_params
    from rulekit.stages.sample import sample as run_sample

    _check_names(task, model, guidance)
    settings = load_params(params)
    for name in _chosen(model, settings.models):
        meta = run_sample(task, name, guidance, settings)
        summary = meta["summary"]
        _report(
            f"sampled {meta['n_samples']} from {name} on {task} with {guidance} in {meta['seconds']:.1f} s: "
            f"validity {summary['validity']:.3f}, coarse accuracy {summary['coarse_accuracy']:.3f}, "
            f"mean |residual| {summary['mean_abs_residual']:.4f}"
        )


@app.command("train-classifier")
def train_classifier(
    task: str = typer.Argument(..., help="The task whose rule classifier to train."),
    model: Optional[str] = MODEL_OPTION,
    params: Path = PARAMS_OPTION,
) -> None:
    """Train the noise-conditioned rule classifier: data against the model's own rule-breaking samples."""
    from rulekit.params import load_params
    from rulekit.stages.train_classifier import train_classifier as run_train_classifier

    _check_names(task, model)
    settings = load_params(params)
    for name in _chosen(model, settings.models):
        summary = run_train_classifier(task, name, settings)
        _report(
            f"trained the rule classifier of {name} on {task} in {summary['seconds']:.1f} s: "
            f"{summary['n_positives']} positives, {summary['n_own_negatives']} of the model's own samples as negatives"
        )


GUIDANCE_OPTION = typer.Option(None, "--guidance", "-g", help="The guidance strategy (default: every one in params.yaml's guidance).")


@app.command()
def evaluate(
    task: str = typer.Argument(..., help="The task whose samples to evaluate."),
    model: Optional[str] = MODEL_OPTION,
    guidance: Optional[str] = GUIDANCE_OPTION,
    params: Path = PARAMS_OPTION,
) -> None:
    """Sample with each guidance strategy, compute every metric with bootstrap intervals; write
    evaluation/, metrics/ and plots/."""
    from rulekit.params import load_params
    from rulekit.stages.evaluate import evaluate as run_evaluate

    _check_names(task, model, guidance)
    settings = load_params(params)
    for model_name in _chosen(model, settings.models):
        for guidance_name in _chosen(guidance, settings.guidance):
            evaluation = run_evaluate(task, model_name, guidance_name, settings)
            result = evaluation["metrics"]
            _report(
                f"evaluated {model_name} on {task} with {guidance_name} "
                f"({evaluation['n_samples']} samples in {evaluation['sampling_seconds']:.1f} s): "
                f"coarse accuracy {result['coarse_accuracy']['value']:.3f}, "
                f"residual band {result['band_ratio']['value']:.1f}× the data's noise floor"
            )


@app.command()
def probe(
    task: str = typer.Argument(..., help="The task to probe."),
    model: Optional[str] = MODEL_OPTION,
    params: Path = PARAMS_OPTION,
) -> None:
    """Measure how detectable fine-rule violations are to scikit-learn probes (AUC against δ)."""
    from rulekit.params import load_params
    from rulekit.stages.probe import probe as run_probe

    _check_names(task, model)
    settings = load_params(params)
    for model_name in _chosen(model, settings.models):
        rows = run_probe(task, model_name, settings)
        _report(f"probed {task} with {model_name}'s network: {len(rows)} fits")


@app.command()
def report(params: Path = PARAMS_OPTION) -> None:
    """Write reports/report.md from metrics/ and plots/, and print the headline table."""
    from rulekit.params import load_params
    from rulekit.stages.report import report as run_report

    path = run_report(load_params(params))
    _report(f"wrote {path}")


def _check_names(task: str, model: str | None = None, guidance: str | None = None) -> None:
    """Stop on an unknown task, model or guidance name before anything is read or started."""
    from rulekit.registry import get_registry

    registry = get_registry()
    registry.task(task)
    if model is not None:
        registry.get("model", model)
    if guidance is not None:
        registry.get("guidance", guidance)


def _chosen(requested: str | None, configured: list[str]) -> list[str]:
    """The one name asked for on the command line, or every name ``params.yaml`` lists."""
    return [requested] if requested else list(configured)


def _report(message: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(message)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and exit code 2."""
    # diffusers logs a failed model load itself before raising; rulekit reports that failure as
    # its own one line, so the library's log lines below CRITICAL would only repeat it. The
    # variable is read when diffusers first loads; the level covers a diffusers already loaded.
    if "DIFFUSERS_VERBOSITY" not in os.environ:
        os.environ["DIFFUSERS_VERBOSITY"] = "critical"
        logging.getLogger("diffusers").setLevel(logging.CRITICAL)
    try:
        code = app(args=argv, prog_name="rulekit", standalone_mode=False)
    except RulekitError as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
    except click_exceptions.NoArgsIsHelpError as error:
        sys.stdout.write(error.ctx.get_help() + "\n")
        sys.exit(0)
    except click_exceptions.UsageError as error:
        sys.stderr.write(f"error: {error.format_message()} (see: rulekit {_command(error)}--help)\n")
        sys.exit(2)
    except click_exceptions.ClickException as error:
        sys.stderr.write(f"error: {error.format_message()}\n")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _command(error: click_exceptions.UsageError) -> str:
    context = error.ctx
    if context is None or context.parent is None:
        return ""
    return f"{context.info_name} "


if __name__ == "__main__":
    main()
