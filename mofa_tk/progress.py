"""Progress bars for long work (fits, training, evaluation, data scans, model files), all built here.

Example::

    with progress_bar("[bold]fit[/] {task.description}", ["loss {task.fields[loss]:.4g}"]) as bar:
        task = bar.add_task("pose", total=15, loss=float("nan"))
        bar.update(task, advance=1, loss=0.5)
"""
from __future__ import annotations

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
                           track)

__all__ = ["progress_bar", "track_items"]


def progress_bar(description: str = "[bold]{task.description}", fields=(), *, enabled: bool = True,
                 elapsed: bool = True, remaining: bool = False) -> Progress:
    """A rich `Progress`: description, bar, done / total, then `fields`, elapsed and remaining time.

    Args:
        description: rich format string of the first column (`{task.description}` is the task's name).
        fields: further format strings, e.g. "loss {task.fields[loss]:.4g}" (the task supplies the fields).
        enabled: False gives a silent bar (the same calls, nothing drawn).
        elapsed, remaining: show the elapsed time and the estimated time left.
    """
    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn(), *(TextColumn(f) for f in fields)]
    if elapsed:
        columns.append(TimeElapsedColumn())
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, disable=not enabled, transient=False)


def track_items(items, label: str, min_items: int = 20):
    """`items` with a progress bar while iterating when there are at least `min_items` of them."""
    if len(items) < min_items:
        return items
    return track(items, description=label)
