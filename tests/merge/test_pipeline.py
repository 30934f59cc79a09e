"""The merge's I/O pipeline below the engine: O_DIRECT reads, write-behind, ordered writes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from patchctl.merge._copy import WriteBehind
from patchctl.merge._pipeline import ALIGN, Call, Copy, Pipeline, Read, StreamHash, Write


def _direct_fd(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECT)
    except (OSError, AttributeError):
        pytest.skip("this filesystem does not open files for O_DIRECT")


@pytest.mark.parametrize(
    ("offset", "nbytes"),
    [(0, 4096), (1, 10), (4095, 2), (4096 * 3 + 17, 3 * 4096 + 5), (70_000 - 11, 11), (12_345, 0)],
)
def test_direct_reads_give_the_bytes_at_any_offset_and_length(tmp_path: Path, offset: int, nbytes: int) -> None:
    """Unaligned ranges (start, end, the file's last bytes) read through O_DIRECT into an aligned
    superset, and the view handed on is exactly the range."""
    data = os.urandom(70_000)  # not a multiple of the alignment: the last read ends past EOF
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd, dfd = os.open(path, os.O_RDONLY), _direct_fd(path)
    try:
        pipe = Pipeline(buffers=1, buffer_bytes=16 << 10, advance=lambda t, n: None)
        view = pipe._fill(Read(fd, offset, nbytes, direct_fd=dfd), pipe._pool.get_nowait())
        assert bytes(view) == data[offset : offset + nbytes]
        assert not pipe._no_direct  # the direct read was used, not the fallback
        pipe.release(view)
        assert pipe._pool.qsize() == 1
        # larger than a pooled buffer: a one-off buffer, not returned to the pool
        big = pipe._fill(Read(fd, 5, 40_000, direct_fd=dfd), pipe._pool.get_nowait())
        assert bytes(big) == data[5:40_005]
        pipe.release(big)
        assert pipe._pool.qsize() == 1
    finally:
        os.close(fd)
        os.close(dfd)


def test_a_direct_read_past_the_end_of_the_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 5000)
    fd, dfd = os.open(path, os.O_RDONLY), _direct_fd(path)
    try:
        pipe = Pipeline(buffers=1, buffer_bytes=16 << 10, advance=lambda t, n: None)
        with pytest.raises(OSError, match="unexpected end of file"):
            pipe._fill(Read(fd, 4000, 2000, direct_fd=dfd), pipe._pool.get_nowait())
    finally:
        os.close(fd)
        os.close(dfd)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_writes_copies_and_calls_reach_the_file_in_job_order(tmp_path: Path, workers: int) -> None:
    """Computations finish out of order on several threads (later ones sleep less); the writes,
    the copies between them and the closing call still land in job order: the file is hashed
    as written, and the call sees every byte before it."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(64 * 1000))
    out = tmp_path / "out.bin"
    sfd, ofd = os.open(src, os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    hashes = {ofd: StreamHash(b"")}
    behind = {ofd: WriteBehind(ofd, drop=True)}
    seen: list[str | None] = []
    jobs: list[Read | Copy | Call] = []
    for i in range(64):
        if i % 5 == 4:
            jobs.append(Copy(sfd, ofd, 1000, i * 1000, i * 1000))
        else:
            jobs.append(Read(sfd, i * 1000, 1000, payload=i))
    jobs.append(Call(lambda: seen.append(hashes[ofd].hexdigest(64 * 1000))))
    gate = threading.Event()

    def step(job: Read, data: memoryview):  # type: ignore[no-untyped-def]
        i = job.payload

        def compute() -> Write:
            if i == 0:
                gate.wait(2)  # the first piece finishes last
            elif i > 10:
                gate.set()
            flipped = bytes(255 - b for b in data)
            pipe.release(data)
            return Write(ofd, job.offset, flipped)

        return compute

    pipe = Pipeline(buffers=3, buffer_bytes=1000, advance=lambda t, n: None, hashes=hashes, behind=behind)
    try:
        pipe.run(jobs, step, workers=workers)
    finally:
        os.close(sfd)
        os.close(ofd)
    raw = src.read_bytes()
    want = b"".join(
        raw[i * 1000 : (i + 1) * 1000] if i % 5 == 4 else bytes(255 - b for b in raw[i * 1000 : (i + 1) * 1000])
        for i in range(64)
    )
    assert out.read_bytes() == want
    assert seen == [hashlib.sha256(want).hexdigest()]


def test_an_error_on_a_compute_thread_stops_the_pipeline(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100_000))
    fd = os.open(src, os.O_RDONLY)

    def step(job: Read, data: memoryview):  # type: ignore[no-untyped-def]
        def compute() -> Write:
            if job.payload == 7:
                raise RuntimeError("boom")
            pipe.release(data)
            return Write(fd, 0, b"")

        return compute

    pipe = Pipeline(buffers=2, buffer_bytes=100, advance=lambda t, n: None)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            pipe.run([Read(fd, i * 100, 100, payload=i) for i in range(1000)], step, workers=2)
    finally:
        os.close(fd)


def test_write_behind_sends_windows_to_disk_and_gives_up_out_of_order(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        wb = WriteBehind(fd, drop=True)
        chunk = os.urandom(1 << 20)
        for i in range(3 * WriteBehind.WINDOW // len(chunk) + 1):
            os.pwrite(fd, chunk, i * len(chunk))
            wb.wrote(i * len(chunk), len(chunk))
        assert wb._started >= 3 * WriteBehind.WINDOW
        assert wb._settled >= WriteBehind.WINDOW  # waited for and dropped behind
        wb.wrote(0, 10)  # out of order: no more write-behind, the final fsync does it all
        assert not wb._in_order
    finally:
        os.close(fd)
    assert path.stat().st_size == (3 * WriteBehind.WINDOW // (1 << 20) + 1) << 20
    assert ALIGN == 4096
