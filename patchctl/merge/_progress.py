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
    """Rich bars on stderr: bytes written (size, rate, time left), tensors done out of the total
    and the shard being written; for a base still arriving from the Hub, a second bar for the
    download (bytes, rate, time left, the shard being fetched). Thread-safe (rich's own lock):
    the writer and download threads report here."""

    def __init__(self, description: str = "merging", *, console: Any = None) -> None:
        self._description = description
        self._console = console
        self._progress: Any = None
        self._task: Any = None
        self._download: Any = None
        self._done = 0
        self._total = 0
        self._shard = ""
        self._files = (0, 0)

    def _label(self) -> str:
        where = f" · {self._shard}" if self._shard else ""  # no brackets: rich would read markup
        return f"{self._description} {self._done}/{self._total} tensors{where}"

    def _ensure(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console or Console(stderr=True),
            )
            self._progress.start()
        return self._progress

    # ---- a base arriving from the Hub -----------------------------------------------------------
    def start_download(self, total_bytes: int, files: int) -> None:
        self._files = (0, files)
        self._download = self._ensure().add_task(self._download_label(""), total=total_bytes)

    def _download_label(self, name: str) -> str:
        done, total = self._files
        return f"downloading {done}/{total} shards" + (f" · {name}" if name else "")

    def downloading(self, name: str) -> None:
        if self._progress is not None and self._download is not None:
            self._files = (self._files[0] + 1, self._files[1])
            self._progress.update(self._download, description=self._download_label(name))

    def downloaded(self, nbytes: int) -> None:
        if self._progress is not None and self._download is not None:
            self._progress.update(self._download, advance=nbytes)

    # ---- MergeProgress ---------------------------------------------------------------------------
    def start(self, total_tensors: int, total_bytes: int) -> None:
        self._total, self._done = total_tensors, 0
        self._task = self._ensure().add_task(self._label(), total=total_bytes)

    def begin_shard(self, name: str, index: int, count: int) -> None:
        """Called (on the hasher thread) as the writes of shard ``index`` of ``count`` begin."""
        self._shard = f"{name} ({index + 1}/{count})" if count > 1 else name
        if self._progress is not None:
            self._progress.update(self._task, description=self._label())

    def advance(self, tensors: int, nbytes: int) -> None:
        if self._progress is None:
            return
        self._done += tensors
        self._progress.update(self._task, advance=nbytes, description=self._label())

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
