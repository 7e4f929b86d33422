"""The one progress bar of long commands: done out of total, events per second."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ledger.cli.app import console


def rate_progress(*, transient: bool = True) -> Progress:
    """A bar per task (see `updater`); `transient` bars vanish when done."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def updater(bar: Progress, description: str) -> Callable[[int, int], None]:
    """A task on `bar` and the callback that moves it: `update(position, stop)`."""
    task = bar.add_task(description, total=None, rate="-")
    started = time.perf_counter()

    def update(position: int, stop: int) -> None:
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=position, total=stop, rate=f"{position / elapsed:,.0f}")

    return update
