"""Read ahead, compute, write behind: three threads and a bounded pool of buffers (no torch).

The reader runs a generator of jobs (it opens the files, so waiting for a download happens on
its thread), reads each :class:`Read` into a buffer taken from the pool and hands it on; the
caller's thread computes (torch releases the GIL) and hands :class:`Write` and :class:`Copy` jobs
to the writer, which writes at absolute offsets (``pwrite``, ``copy_file_range``) and returns
the buffers to the pool. The pool bounds the memory in flight: ``buffers × buffer_bytes``.
Positional writes make the output independent of the threads' timing: the bytes are those of
the sequential path. A file written front to back is hashed as it is written (:class:`StreamHash`,
on the writer thread), so that its sha256 needs no second read.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from patchctl.merge._copy import copy_range, pread_exact, pwrite_all

__all__ = ["Copy", "Pipeline", "Read", "StreamHash", "Write"]


class StreamHash:
    """sha256 of a file as it is written, while each write starts where the last one ended (from
    ``head``, the bytes already at offset 0); any other order gives up (:meth:`hexdigest` is then
    None and the caller hashes the file by reading it). A copied range is hashed from its source."""

    def __init__(self, head: bytes) -> None:
        self._h = hashlib.sha256(head)
        self._next = len(head)
        self._ok = True
        self._buf: bytearray | None = None

    def wrote(self, offset: int, data: memoryview) -> None:
        if self._ok and offset == self._next:
            self._h.update(data)
            self._next += len(data)
        else:
            self._ok = False

    def copied(self, src: int, src_off: int, offset: int, length: int) -> None:
        if not self._ok or offset != self._next:
            self._ok = False
            return
        if self._buf is None:
            self._buf = bytearray(1 << 20)
        view = memoryview(self._buf)
        for done in range(0, length, len(view)):
            n = min(len(view), length - done)
            pread_exact(src, n, src_off + done, self._buf)  # into the buffer: it is long enough
            self._h.update(view[:n])
        self._next += length

    def hexdigest(self, size: int) -> str | None:
        """The file's sha256 if every byte of its ``size`` went through this hash, else None."""
        return self._h.hexdigest() if self._ok and self._next == size else None


@dataclass(frozen=True)
class Read:
    """Read ``nbytes`` at ``offset`` of ``fd`` into a pooled buffer; ``payload`` goes along."""

    fd: int
    offset: int
    nbytes: int
    payload: Any = None


@dataclass(frozen=True)
class Copy:
    """Copy a byte range between files in the kernel (``copy_file_range``)."""

    src: int
    dst: int
    length: int
    src_off: int
    dst_off: int
    tensors: int = 0


@dataclass(frozen=True)
class Write:
    """Write ``data`` at ``offset`` of ``fd``; ``release`` (a pooled buffer) goes back afterwards."""

    fd: int
    offset: int
    data: Any
    tensors: int = 0
    release: bytearray | None = None


@dataclass(frozen=True)
class Call:
    """Run ``fn`` on the writer thread once every job before it is written (e.g. close a file)."""

    fn: Callable[[], None]


_DONE = object()
_POLL = 0.1


class _Stopped(Exception):
    pass


class Pipeline:
    """``for job, buf in pipe.run(jobs): ...; pipe.put(Write(...))``; see the module doc.

    ``advance(tensors, nbytes)`` is called on the writer thread after each write or copy."""

    def __init__(
        self,
        *,
        buffers: int,
        buffer_bytes: int,
        advance: Callable[[int, int], None],
        threads: bool = True,
        stop: threading.Event | None = None,
        hashes: dict[int, StreamHash] | None = None,
    ) -> None:
        #: False: read, compute and write in turn on the caller's thread (the reference for tests)
        self.threads = threads
        self._pool: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self._pool.put(bytearray(buffer_bytes))
        self._buffer_bytes = buffer_bytes
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=buffers)
        self._writes: queue.Queue[Any] = queue.Queue(maxsize=buffers + 2)
        self._advance = advance
        #: set when any thread fails or the caller stops iterating (shared with the job generator)
        self._stop = stop if stop is not None else threading.Event()
        self._errors: list[BaseException] = []
        #: output fd -> its hash as written (registered before the fd's first job, see StreamHash)
        self._hashes = hashes if hashes is not None else {}

    # ---- plumbing that gives up when another thread failed ------------------------------------
    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue

    def _fail(self, exc: BaseException) -> None:
        if not isinstance(exc, _Stopped):
            self._errors.append(exc)
        self._stop.set()

    def _raise(self) -> None:
        if self._errors:
            raise self._errors[0]

    # ---- threads ------------------------------------------------------------------------------
    def _reader(self, jobs: Iterable[Read | Copy | Call]) -> None:
        try:
            for job in jobs:
                if isinstance(job, Read):
                    buf = self._get(self._pool)
                    if job.nbytes > len(buf):  # a row larger than a buffer: a one-off buffer
                        self._pool.put(buf)
                        buf = bytearray(job.nbytes)
                    pread_exact(job.fd, job.nbytes, job.offset, buf)
                    self._put(self._ready, (job, buf))
                else:
                    self._put(self._ready, (job, None))
            self._put(self._ready, _DONE)
        except BaseException as exc:
            self._fail(exc)

    def _write(self, job: Write | Copy | Call) -> None:
        if isinstance(job, Write):
            view = memoryview(job.data).cast("B")
            pwrite_all(job.fd, view, job.offset)
            if (h := self._hashes.get(job.fd)) is not None:
                h.wrote(job.offset, view)
            self.release(job.release)
            self._advance(job.tensors, len(view))
        elif isinstance(job, Copy):
            copy_range(job.src, job.dst, job.length, job.src_off, job.dst_off)
            if (h := self._hashes.get(job.dst)) is not None:
                h.copied(job.src, job.src_off, job.dst_off, job.length)
            self._advance(job.tensors, job.length)
        else:
            job.fn()

    def _writer(self) -> None:
        try:
            while True:
                job = self._get(self._writes)
                if job is _DONE:
                    return
                self._write(job)
        except BaseException as exc:
            self._fail(exc)

    # ---- the caller's side --------------------------------------------------------------------
    def release(self, buf: bytearray | None) -> None:
        """Give a buffer back to the pool (one-off buffers are dropped)."""
        if buf is not None and len(buf) == self._buffer_bytes:
            self._pool.put(buf)

    def put(self, job: Write | Copy | Call) -> None:
        if not self.threads:
            self._write(job)
            return
        try:
            self._put(self._writes, job)
        except _Stopped:
            self._raise()
            raise

    def run(self, jobs: Iterable[Read | Copy | Call]) -> Iterator[tuple[Read, bytearray]]:
        """Yield each :class:`Read` with its filled buffer, in order; :class:`Copy` and :class:`Call`
        jobs pass straight to the writer. Returns when every job has been written; re-raises the
        first error of any thread (and stops the others)."""
        if not self.threads:
            for job in jobs:
                if isinstance(job, Read):
                    buf = self._pool.get_nowait()
                    if job.nbytes > len(buf):
                        self._pool.put(buf)
                        buf = bytearray(job.nbytes)
                    yield job, pread_exact(job.fd, job.nbytes, job.offset, buf)
                else:
                    self._write(job)
            return
        reader = threading.Thread(target=self._reader, args=(jobs,), name="patchctl-read", daemon=True)
        writer = threading.Thread(target=self._writer, name="patchctl-write", daemon=True)
        reader.start()
        writer.start()
        finished = False
        try:
            while True:
                item = self._get(self._ready)
                if item is _DONE:
                    break
                job, buf = item
                if buf is None:
                    self._put(self._writes, job)
                else:
                    yield job, buf
            self._put(self._writes, _DONE)
            writer.join()
            finished = True
        except _Stopped:
            pass
        finally:
            if not finished:  # an error here or in a thread, or the caller stopped iterating
                self._stop.set()
            writer.join()
            reader.join()
        self._raise()
