"""The console: a progress bar while an epoch runs and an epoch table like fastai's, or plain log lines."""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes:02d}:{rest:02d}"


_WIDTHS = {"stage": 5, "phase": 13, "epoch": 5, "seconds": 7}


class Console:
    """Rank 0's display. `quiet` prints the same information as plain lines, without live bars."""

    def __init__(self, quiet: bool = False, enabled: bool = True) -> None:
        self.quiet, self.enabled = quiet, enabled
        self.rich = RichConsole(highlight=False, soft_wrap=True, file=sys.stdout)
        self._progress: Progress | None = None
        self._task: Any = None
        self._columns: list[str] = []
        self._widths: list[int] = []

    def info(self, message: str) -> None:
        if self.enabled:
            self.rich.print(message, markup=False)

    def warn(self, message: str) -> None:
        if self.enabled:
            self.rich.print(f"warning: {message}", style="yellow", markup=False)

    # --- the epoch table ------------------------------------------------------------------------------

    def table_header(self, columns: list[str]) -> None:
        self._columns = columns
        self._widths = [max(len(c), _WIDTHS.get(c, 10)) for c in columns]
        self.info("  ".join(f"{c:<{w}}" for c, w in zip(columns, self._widths, strict=True)))

    def table_row(self, row: dict[str, Any]) -> None:
        cells = []
        for column, width in zip(self._columns, self._widths, strict=True):
            value = row.get(column, "")
            text = format_seconds(value) if column == "seconds" else format_value(value)
            cells.append(f"{text:<{width}}")
        self.info("  ".join(cells))

    # --- the progress bar -----------------------------------------------------------------------------

    def start_bar(self, total: int, description: str) -> None:
        # No live bar when output goes to a file or pipe: logs get the table rows only.
        if not self.enabled or self.quiet or total == 0 or not self.rich.is_terminal:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.rich,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, status="")

    def advance_bar(self, steps: int = 1, status: str | None = None) -> None:
        if self._progress is None:
            return
        if status is None:
            self._progress.update(self._task, advance=steps)
        else:
            self._progress.update(self._task, advance=steps, status=status)

    def stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
