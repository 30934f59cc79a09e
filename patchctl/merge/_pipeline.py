"""Read ahead, compute, write behind: threads and a bounded pool of buffers (no torch).

The reader runs a generator of jobs (it opens the files, so waiting for a download happens on
its thread) and reads each :class:`Read` into a buffer taken from the pool (from the page cache,
or with ``O_DIRECT`` where the job says so and the cache does not hold it). The caller's thread
takes them in order and calls ``step(job, buffer)``, which prepares the work (anything that
must happen in order) and returns the computation; that runs on one of ``workers`` compute
threads (torch releases the GIL), several pieces at once. Their :class:`Write` jobs, and the
:class:`Copy` and :class:`Call` jobs between them, reach the writer in job order; it writes at
absolute offsets (``pwrite``, ``copy_file_range``; or, for a file written with ``O_DIRECT``, its
:class:`~patchctl.merge._copy.DirectSink`, from the buffer the bytes were read and computed in)
and hands each job on to the hasher thread,
which hashes what was written (:class:`StreamHash`: a file written front to back needs no second
read for its sha256; hence the writes in order) and returns the buffers to the pool. The pool
bounds the memory in flight: ``buffers × buffer_bytes``. Positional writes make the output
independent of the threads' timing: the bytes are those of the sequential path.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from patchctl._fs import CachedHashing, Residency
from patchctl.merge._copy import (
    ALIGN,
    DirectSink,
    WriteBehind,
    copy_range,
    drop_cache,
    pread_exact,
    pwrite_all,
)

__all__ = ["Call", "Copy", "Pipeline", "Read", "Step", "StreamHash", "Write"]


class StreamHash:
    """sha256 of a file as it is written, while each write starts where the last one ended (from
    ``head``, the bytes already at offset 0); any other order gives up (:meth:`hexdigest` is then
    None and the caller hashes the file by reading it). A copied range is hashed from its source."""

    def __init__(self, head: bytes) -> None:
        self._h = hashlib.sha256(head)
        self._next = len(head)
        self._ok = True
        self._buf: bytearray | None = None
        self._cached = CachedHashing()  # the bytes were written by another thread

    def wrote(self, offset: int, data: memoryview) -> None:
        if self._ok and offset == self._next:
            for piece in self._cached.pieces(data):
                self._h.update(piece)
            self._next += data.nbytes
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
    """Read ``nbytes`` at ``offset`` of ``fd`` into a pooled buffer; ``payload`` goes along.
    ``direct_fd``: the same file opened with ``O_DIRECT``, read instead where it works (the
    bytes go from the disk to the buffer: no copy, no page cache; see :class:`Pipeline`)."""

    fd: int
    offset: int
    nbytes: int
    payload: Any = None
    direct_fd: int | None = None
    #: which pages of ``fd`` the page cache holds: those are read from there, not with O_DIRECT
    resident: Residency | None = None


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
    release: memoryview | None = None


@dataclass(frozen=True)
class Call:
    """Run ``fn`` on the hasher thread once every job before it is written and hashed (e.g. close a file)."""

    fn: Callable[[], None]


#: ``step(read, data)``, called in job order on the caller's thread with the bytes read (a view
#: of a pooled buffer: :meth:`Pipeline.release` it, or pass it as :attr:`Write.release`):
#: prepares the work and returns the computation (run on a compute thread), giving the :class:`Write`
Step = Callable[[Read, memoryview], Callable[[], Write]]


def _address(view: memoryview | mmap.mmap) -> int | None:
    """The memory address of a writable buffer's first byte (None for a read-only one)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return None


def _aligned_buffer(n: int) -> mmap.mmap:
    """``n`` bytes of page-aligned anonymous memory (an O_DIRECT read needs an aligned address)."""
    return mmap.mmap(-1, max(n, 1))


_DONE = object()
_POLL = 0.1


class _Stopped(Exception):
    pass


class Pipeline:
    """``pipe.run(jobs, step, workers=n)``: see the module doc and :data:`Step`.

    ``advance(tensors, nbytes)`` is called on the hasher thread after each write or copy."""

    def __init__(
        self,
        *,
        buffers: int,
        buffer_bytes: int,
        advance: Callable[[int, int], None],
        threads: bool = True,
        stop: threading.Event | None = None,
        hashes: dict[int, StreamHash] | None = None,
        behind: dict[int, WriteBehind] | None = None,
        sinks: dict[int, DirectSink] | None = None,
        drop_reads: bool = False,
    ) -> None:
        #: False: read, compute and write in turn on the caller's thread (the reference for tests)
        self.threads = threads
        #: a read of ``buffer_bytes`` fits with its O_DIRECT alignment on either side
        self._buffer_bytes = buffer_bytes + 2 * ALIGN
        self._pool: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(buffers):
            self._pool.put(_aligned_buffer(self._buffer_bytes))
        #: bytes read from the page cache and with O_DIRECT (see :meth:`_fill`)
        self.cached_bytes = 0
        self.direct_bytes = 0
        #: set when an O_DIRECT read was refused (EINVAL): the buffered descriptors from then on
        self._no_direct = False
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=buffers)
        self._writes: queue.Queue[Any] = queue.Queue(maxsize=buffers + 2)
        self._hashing: queue.Queue[Any] = queue.Queue(maxsize=buffers + 2)
        self._advance = advance
        #: set when any thread fails or the caller stops iterating (shared with the job generator)
        self._stop = stop if stop is not None else threading.Event()
        self._errors: list[BaseException] = []
        #: output fd -> its hash as written (registered before the fd's first job, see StreamHash)
        self._hashes = hashes if hashes is not None else {}
        #: output fd -> its write-behind (registered with its hash, see WriteBehind)
        self._behind = behind if behind is not None else {}
        #: output fd -> its O_DIRECT writer (instead of ``pwrite`` on the fd itself)
        self._sinks = sinks if sinks is not None else {}
        #: drop what is read from the page cache once read (a base larger than the cache)
        self._drop_reads = drop_reads

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
                    self._put(self._ready, (job, self._fill(job, self._get(self._pool))))
                else:
                    self._put(self._ready, (job, None))
            self._put(self._ready, _DONE)
        except BaseException as exc:
            self._fail(exc)

    def _fill(self, job: Read, buf: mmap.mmap) -> memoryview:
        """Read ``job`` into ``buf`` (a pooled buffer; a one-off one when the job is larger), at
        the position its offset has modulo :data:`ALIGN` (where an O_DIRECT read puts it, and where
        a :class:`DirectSink` can write it from). With a ``direct_fd``, bytes that the page cache
        holds (``resident``) are copied from there: a base just written or read is not read from
        the disk again; the others are read with ``O_DIRECT``."""
        if job.nbytes + 2 * ALIGN > len(buf):  # a row larger than a buffer: a one-off buffer
            self._pool.put(buf)
            buf = _aligned_buffer(job.nbytes + 2 * ALIGN)
        view = memoryview(buf)
        start = job.offset - job.offset % ALIGN
        data = view[job.offset - start : job.offset - start + job.nbytes]
        cached = job.resident is not None and job.resident.holds(job.offset, job.nbytes)
        if job.direct_fd is not None and not self._no_direct and not cached:
            end = -(-(job.offset + job.nbytes) // ALIGN) * ALIGN
            try:
                _pread_direct(job.direct_fd, view[: end - start], start, job.offset + job.nbytes - start)
                self.direct_bytes += job.nbytes
                return data
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._no_direct = True  # this filesystem or device refuses these reads
        pread_exact(job.fd, job.nbytes, job.offset, data)
        if cached:
            self.cached_bytes += job.nbytes
        elif self._drop_reads:
            drop_cache(job.fd, job.offset, job.nbytes)
        return data

    def _write(self, job: Write | Copy | Call) -> None:
        """The I/O of a job (writer thread); :meth:`_after` does the rest."""
        if isinstance(job, Write):
            view = memoryview(job.data).cast("B")
            if (sink := self._sinks.get(job.fd)) is not None:
                sink.write(job.offset, view, *self._region(view, job.release))
                return
            pwrite_all(job.fd, view, job.offset)
            if (wb := self._behind.get(job.fd)) is not None:
                wb.wrote(job.offset, len(view))
        elif isinstance(job, Copy):
            # a file written with O_DIRECT gets its untouched bytes as Reads and Writes, not Copies
            assert job.dst not in self._sinks, "a kernel copy into a file written with O_DIRECT"
            copy_range(job.src, job.dst, job.length, job.src_off, job.dst_off)
            if (wb := self._behind.get(job.dst)) is not None:
                wb.wrote(job.dst_off, job.length)

    def _region(self, view: memoryview, release: memoryview | None) -> tuple[memoryview | None, int]:
        """The pooled buffer that ``view`` lies in and where (for :meth:`DirectSink.write`), or (None, 0)."""
        buf = release.obj if release is not None else None
        if not isinstance(buf, mmap.mmap) or (base := _address(buf)) is None or (addr := _address(view)) is None:
            return None, 0
        if not (base <= addr and addr - base + len(view) <= len(buf)):
            return None, 0
        return memoryview(buf), addr - base

    def _after(self, job: Write | Copy | Call) -> None:
        """Once a job is written (hasher thread, in job order): hash what it wrote, give its buffer
        back, count it; a :class:`Call` runs here, after every job before it is written and hashed."""
        if isinstance(job, Write):
            view = memoryview(job.data).cast("B")
            if (h := self._hashes.get(job.fd)) is not None:
                h.wrote(job.offset, view)
            self.release(job.release)
            self._advance(job.tensors, len(view))
        elif isinstance(job, Copy):
            if (h := self._hashes.get(job.dst)) is not None:
                h.copied(job.src, job.src_off, job.dst_off, job.length)
            self._advance(job.tensors, job.length)
        else:
            job.fn()

    def _writer(self) -> None:
        try:
            while True:
                job = self._get(self._writes)
                if job is not _DONE:
                    self._write(job)
                self._put(self._hashing, job)
                if job is _DONE:
                    return
        except BaseException as exc:
            self._fail(exc)

    def _hasher(self) -> None:
        try:
            while (job := self._get(self._hashing)) is not _DONE:
                self._after(job)
        except BaseException as exc:
            self._fail(exc)

    # ---- the caller's side --------------------------------------------------------------------
    def release(self, data: memoryview | None) -> None:
        """Give the buffer under ``data`` back to the pool (one-off buffers are dropped); any thread may call it."""
        if data is not None and isinstance(buf := data.obj, mmap.mmap) and len(buf) == self._buffer_bytes:
            self._pool.put(buf)

    def run(self, jobs: Iterable[Read | Copy | Call], step: Step, *, workers: int = 1) -> None:
        """Run every job (see the module doc): each :class:`Read`'s computation on one of
        ``workers`` threads (1: on this thread), every write in job order. Returns when all is
        written; re-raises the first error of any thread (and stops the others)."""
        if not self.threads:
            for job in jobs:
                done = step(job, self._fill(job, self._pool.get_nowait()))() if isinstance(job, Read) else job
                self._write(done)
                self._after(done)
            return
        reader = threading.Thread(target=self._reader, args=(jobs,), name="patchctl-read", daemon=True)
        writer = threading.Thread(target=self._writer, name="patchctl-write", daemon=True)
        hasher = threading.Thread(target=self._hasher, name="patchctl-hash", daemon=True)
        compute = ThreadPoolExecutor(workers, thread_name_prefix="patchctl-compute") if workers > 1 else None
        #: jobs handed on in order: computations in flight, and the copies and calls between them
        pending: deque[Future[Write] | Copy | Call] = deque()
        threads = (reader, writer, hasher)
        for thread in threads:
            thread.start()
        finished = False
        try:
            while True:
                item = self._get(self._ready)
                if item is _DONE:
                    break
                job, buf = item
                if buf is None:
                    pending.append(job)
                elif compute is None:
                    pending.append(_now(step(job, buf)))
                else:
                    pending.append(compute.submit(step(job, buf)))
                # hand on what is ready, in order; wait for the oldest once 2 × workers jobs are pending
                while pending and (
                    len(pending) > 2 * workers or not isinstance(pending[0], Future) or pending[0].done()
                ):
                    self._hand_on(pending.popleft())
            while pending:
                self._hand_on(pending.popleft())
            self._put(self._writes, _DONE)
            hasher.join()
            finished = True
        except _Stopped:
            pass
        finally:
            if not finished:  # an error here or in a thread
                self._stop.set()
            if compute is not None:
                compute.shutdown(wait=True, cancel_futures=True)
            for thread in threads:
                thread.join()
        self._raise()

    def _hand_on(self, item: Future[Write] | Copy | Call) -> None:
        self._put(self._writes, item.result() if isinstance(item, Future) else item)


def _pread_direct(fd: int, view: memoryview, offset: int, need: int) -> None:
    """An O_DIRECT read of ``view`` (aligned) at ``offset`` (aligned); its first ``need`` bytes
    must be there (the aligned end may lie past the end of the file)."""
    done = 0
    while done < need:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
        if done % ALIGN:  # the end of the file
            break
    if done < need:
        raise OSError(f"unexpected end of file reading {need} bytes at {offset}")


def _now(fn: Callable[[], Write]) -> Future[Write]:
    """``fn()`` run here, as a finished future (its error raised when the result is taken)."""
    fut: Future[Write] = Future()
    try:
        fut.set_result(fn())
    except BaseException as exc:
        fut.set_exception(exc)
    return fut
