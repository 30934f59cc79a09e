"""Progress reporting for a merge: a tiny protocol and a rich implementation (on stderr)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["MergeProgress", "NullProgress", "RichMergeProgress"]


class MergeProgress(Protocol):
    """What :func:`patchctl.merge.execute_merge` reports while it writes."""

    def start(self, total_tensors: int, total_bytes: int) -> None: ...

    def advance(self, tensors: int, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    def start(self, total_tensors: int, total_bytes: int) -> None:
        pass

    def advance(self, tensors: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class RichMergeProgress:
    """One bar on stderr: bytes written (size, rate, time left) and tensors done out of the total."""

    def __init__(self, description: str = "merging", *, console: Any = None) -> None:
        self._description = description
        self._console = console
        self._progress: Any = None
        self._task: Any = None
        self._done = 0
        self._total = 0

    def _label(self) -> str:
        return f"{self._description} {self._done}/{self._total} tensors"

    def start(self, total_tensors: int, total_bytes: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._total, self._done = total_tensors, 0
        console = self._console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._label(), total=total_bytes)

    def advance(self, tensors: int, nbytes: int) -> None:
        if self._progress is None:
            return
        self._done += tensors
        self._progress.update(self._task, advance=nbytes, description=self._label())

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
