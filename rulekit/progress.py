"""Progress bars for loops that take more than a few seconds: on a terminal, quiet elsewhere."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

QUIET_ENV_VAR = "RULEKIT_QUIET"


def progress_enabled() -> bool:
    """Bars show on an interactive terminal unless ``RULEKIT_QUIET`` is set to a non-empty value."""
    return sys.stderr.isatty() and not os.environ.get(QUIET_ENV_VAR)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Progress]:
    """A rich progress bar with one task (id 0) of ``total`` steps; ``advance`` it as work is done."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress_enabled(),
        transient=False,
    )
    progress.add_task(description, total=total, status="")
    with progress:
        yield progress
