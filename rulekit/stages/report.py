"""The ``report`` stage: one Markdown page, and one table on the terminal, that answer the question.

For every task, model and guidance strategy in ``params.yaml``: did the samples keep the coarse
rule, how wide is their band around the fine rule next to the data's own noise floor, what did
each strategy buy and at what sampling cost, how well does the rule classifier see violations,
and how visible is a fine violation to a probe? Figures are copied next to the report so the
committed page is complete on its own.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rulekit.figures import save_loss_figure
from rulekit.params import Params
from rulekit.storage import load_json, write_bytes_atomic

HEADLINE = (
    ("validity", "validity"),
    ("coarse_accuracy", "coarse acc."),
    ("fine_conformity_1pct", "within 1 %"),
    ("mean_abs_residual", "mean abs. res."),
    ("residual_std", "res. std"),
    ("band_ratio", "× noise floor"),
    ("wasserstein_mean", "coverage W1"),
    ("memorised_fraction", "memorised"),
)
#: The columns of the terminal's table, point estimates only, so that it fits a terminal's width;
#: the page keeps every column with its interval.
TERMINAL = ("validity", "coarse_accuracy", "fine_conformity_1pct", "mean_abs_residual", "band_ratio")


def _format(estimate: dict | None, digits: int = 3) -> str:
    if not estimate:
        return "–"
    value, low, high = estimate["value"], estimate["low"], estimate["high"]
    if value != value:  # NaN: nothing to judge
        return "n/a"
    return f"{value:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def _point(estimate: dict | None, digits: int = 3) -> str:
    if not estimate:
        return "–"
    value = estimate["value"]
    return "n/a" if value != value else f"{value:.{digits}g}"


def _verdict(metrics: dict) -> str:
    """One sentence from the numbers: coarse rule kept or not, fine band against the noise floor."""
    coarse = metrics.get("coarse_accuracy", {}).get("value", float("nan"))
    ratio = metrics.get("band_ratio", {}).get("value", float("nan"))
    coarse_text = f"keeps the coarse rule in {coarse:.1%} of valid samples"
    if ratio != ratio:
        return f"{coarse_text}; its fine rule could not be judged (no valid samples)"
    # A band within twice the measurer's own spread on data is as close to the rule as data is.
    if ratio <= 2:
        return f"{coarse_text}; its residual band is {ratio:.1f}× the data's noise floor: it follows the fine rule"
    return f"{coarse_text}; its residual band is {ratio:.0f}× the data's noise floor: it misses the fine rule"


def _sampling_seconds(samples: Path) -> float | None:
    """How long a strategy's evaluation samples took to draw, from their ``meta.json``."""
    meta = samples / "meta.json"
    return load_json(meta).get("seconds") if meta.exists() else None


def _relative_time(seconds: float | None, baseline: float | None) -> str:
    if not seconds or not baseline:
        return "–"
    return f"{seconds / baseline:.2f}×"


def _classifier_lines(table_path: Path) -> list[str]:
    """Held-out AUC of the rule classifier by δ (rows) and noise level (columns)."""
    if not table_path.exists():
        return []
    rows = list(csv.DictReader(io.StringIO(table_path.read_text())))
    levels = sorted({float(row["level"]) for row in rows})
    cells: dict[str, dict[float, str]] = {}
    for row in rows:
        name = "its own rejected samples" if row["source"] == "own-samples" else f"synthetic δ={float(row['delta']):g}"
        cells.setdefault(name, {})[float(row["level"])] = f"{float(row['auc']):.2f}"
    lines = ["| negatives | " + " | ".join(f"level {level:g}" for level in levels) + " |", "|---" * (len(levels) + 1) + "|"]
    for name, by_level in cells.items():
        lines.append(f"| {name} | " + " | ".join(by_level.get(level, "–") for level in levels) + " |")
    return lines


def _probe_lines(table_path: Path) -> list[str]:
    if not table_path.exists():
        return []
    rows = list(csv.DictReader(io.StringIO(table_path.read_text())))
    deltas = sorted({float(row["delta"]) for row in rows})
    best: dict[str, dict[float, float]] = {}
    for row in rows:
        level = row.get("level") or ""
        name = f"{row['input']}" + (f" @ level {float(level):g}" if level else "") + f" ({row['estimator']})"
        best.setdefault(name, {})[float(row["delta"])] = float(row["auc"])
    lines = ["| probe input | " + " | ".join(f"δ={delta:g}" for delta in deltas) + " |", "|---" * (len(deltas) + 1) + "|"]
    for name, by_delta in sorted(best.items()):
        lines.append(f"| {name} | " + " | ".join(f"{by_delta.get(delta, float('nan')):.2f}" for delta in deltas) + " |")
    return lines


def _auc_section(heading: str, intro: str, table: list[str], figure: Path, figures: Path) -> list[str]:
    """A report section: heading, one sentence, the AUC table and its figure (copied beside the
    report); nothing when there is no table."""
    if not table:
        return []
    lines = [f"### {heading}", "", intro, "", *table, ""]
    if figure.exists():
        shutil.copyfile(figure, figures / figure.name)
        lines += [f"![{figure.stem}](figures/{figure.name})", ""]
    return lines


def _strategy_line(name: str, params: Params) -> str:
    from rulekit.registry import get_registry

    guidance = get_registry().get("guidance", name)
    settings = params.guidance_settings_for(name).model_dump()
    shown = ", ".join(f"{key} {value}" for key, value in settings.items()) or "no settings"
    return f"- `{name}` ({shown}): {guidance.description} *Knows:* {guidance.prior_knowledge}."


def report(params: Params, root: Path = Path("."), out: Path | None = None, console: Console | None = None) -> Path:
    """Write ``reports/report.md`` with its figures, print the headline table, return the page's path."""
    out = out or root / "reports" / "report.md"
    # Everything the page reports is read before anything is written, so a missing stage output
    # stops the report without leaving a half-made reports/ behind.
    data_meta = {task: load_json(root / "data" / task / "meta.json") for task in params.tasks}
    evaluations = {
        (task, model, guidance): load_json(root / "metrics" / task / model / "guidance" / f"{guidance}.json")
        for task in params.tasks
        for model in params.models
        for guidance in params.guidance
    }
    figures = out.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    table = Table(title="rulekit: did the models learn the rules?", show_lines=False)
    labels = dict(HEADLINE)
    for column in ("task", "model", "guidance", *(labels[name] for name in TERMINAL), "time"):
        table.add_column(column, overflow="fold")
    page = [
        "# rulekit report",
        "",
        "Each number is a point estimate with its bootstrap "
        f"{params.evaluate.confidence:.0%} interval. Residuals are in fractions of the image side; "
        "*× noise floor* is the samples' residual spread over the training data's own (measured) spread; "
        "*time* is the strategy's sampling time over unguided sampling's (`none`), same number of kept samples.",
        "",
        "Guidance strategies and what they know of the rule:",
        "",
        *(_strategy_line(name, params) for name in params.guidance),
        "",
    ]
    for task in params.tasks:
        page += [f"## {task}", ""]
        meta = data_meta[task]
        page += [f"{meta['description']} Noise floor of the measurer on the stored data: residual std "
                 f"{meta['noise_floor']['residual_std']:.2g}.", ""]
        page += [
            "| model | guidance | " + " | ".join(label for _, label in HEADLINE) + " | time |",
            "|---" * (len(HEADLINE) + 3) + "|",
        ]
        verdicts, pictures = [], []
        for model in params.models:
            seconds = {guidance: _sampling_seconds(root / "evaluation" / task / model / guidance) for guidance in params.guidance}
            for guidance in params.guidance:
                evaluation = evaluations[(task, model, guidance)]
                result = evaluation["metrics"]
                cells = [_format(result.get(name)) for name, _ in HEADLINE]
                time = _relative_time(seconds[guidance], seconds.get("none"))
                page.append(f"| {model} | {guidance} | " + " | ".join(cells) + f" | {time} |")
                table.add_row(task, model, guidance, *(_point(result.get(name)) for name in TERMINAL), time)
                verdicts.append(f"- **{model}, {guidance}**: the model {_verdict(result)}.")
                run = f"{task}-{model}-{guidance}"
                for source, name in (
                    (root / "plots" / "figures" / f"{run}.png", f"{run}-rule.png"),
                    (root / "evaluation" / task / model / guidance / "grid.png", f"{run}-samples.png"),
                ):
                    if source.exists():
                        shutil.copyfile(source, figures / name)
                        pictures.append(f"![{name}](figures/{name})")
        grid = root / "data" / task / "grid.png"
        if grid.exists():
            shutil.copyfile(grid, figures / f"{task}-data.png")
            pictures.insert(0, f"![{task} training data](figures/{task}-data.png)")
        page += ["", *verdicts, "", *pictures, ""]
        for model in params.models:
            page += _auc_section(
                f"Does the rule classifier see fine violations? ({model})",
                "Held-out ROC AUC of the noise-conditioned rule classifier, rule-abiding images against "
                "each kind of negative, at each noise level (0.5 = chance).",
                _classifier_lines(root / "plots" / "classifier" / f"{task}-{model}.csv"),
                root / "plots" / "figures" / f"classifier-{task}-{model}.png",
                figures,
            )
            page += _auc_section(
                f"How visible is a fine violation? (probes, {model})",
                "Held-out ROC AUC of telling rule-abiding images from images that break the fine rule by δ "
                "(0.5 = chance).",
                _probe_lines(root / "plots" / "probes" / f"{task}-{model}.csv"),
                root / "plots" / "figures" / f"probe-{task}-{model}.png",
                figures,
            )
    curves = sorted((root / "plots" / "loss").glob("*.csv"))
    if curves:
        save_loss_figure(figures / "loss.png", curves)
        page += ["## Training loss", "", "![loss curves](figures/loss.png)", ""]
    write_bytes_atomic(out, "\n".join(page).encode())
    (console or Console()).print(table)
    return out
