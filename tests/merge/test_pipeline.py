"""The merge's I/O pipeline below the engine: O_DIRECT reads, write-behind, ordered writes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from patchctl._fs import CachedHashing
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


def _direct_writer(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    except (OSError, AttributeError):
        pytest.skip("this filesystem does not open files for O_DIRECT")


@pytest.mark.parametrize("head", [0, 8, 4096, 5000])
def test_direct_sink_writes_any_sequence_of_writes_exactly(tmp_path: Path, head: int) -> None:
    """Writes of any length after a header of any length, some from a larger buffer at the
    file's alignment (written from there), some not (through the stage): the file is their
    concatenation, cut to its size."""
    import mmap
    import random

    from patchctl.merge._copy import DirectSink

    rng = random.Random(head)
    path = tmp_path / "out.bin"
    sink = DirectSink(_direct_writer(path), stage_bytes=3 * ALIGN)  # a small stage: writes larger than it
    expected = bytearray(os.urandom(head))
    sink.write(0, memoryview(bytes(expected)))
    for _ in range(60):
        n = rng.choice([1, 7, ALIGN - 1, ALIGN, ALIGN + 3, 5 * ALIGN + 11, 40_000])
        data = os.urandom(n)
        offset = len(expected)
        if rng.random() < 0.6:  # in a pooled-like buffer, at the position the file offset has
            region = mmap.mmap(-1, n + 2 * ALIGN)
            pos = offset % ALIGN + ALIGN * rng.randint(0, 1)
            region[pos : pos + n] = data
            view = memoryview(region)
            sink.write(offset, view[pos : pos + n], view, pos)
        else:
            sink.write(offset, memoryview(data))
        expected += data
    sink.close()
    assert path.read_bytes() == bytes(expected)
    assert sink.size == len(expected)
    assert sink.direct_writes > 0  # the zero-copy path was taken


def test_direct_sink_refuses_a_write_out_of_order(tmp_path: Path) -> None:
    from patchctl.merge._copy import DirectSink

    sink = DirectSink(_direct_writer(tmp_path / "out.bin"))
    sink.write(0, memoryview(b"x" * 10))
    with pytest.raises(ValueError, match="must follow each other"):
        sink.write(20, memoryview(b"y"))
    sink.close()
    assert (tmp_path / "out.bin").read_bytes() == b"x" * 10


def _evicted(path: Path) -> bool:
    """Drop ``path``'s pages from the page cache; whether that worked (not on tmpfs)."""
    from patchctl._fs import Residency

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        res = Residency.of(fd)
        if res is None:
            return False
        try:
            return not res.holds(0, path.stat().st_size)
        finally:
            res.close()
    finally:
        os.close(fd)


def test_residency_tells_what_the_page_cache_holds_and_reads_follow_it(tmp_path: Path) -> None:
    """A streamed read takes resident pages from the cache and the others with O_DIRECT (which
    leaves them out of the cache); mincore asks without bringing anything in."""
    from patchctl._fs import Residency

    data = os.urandom(64 * ALIGN + 100)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    if not _evicted(path):
        pytest.skip("this filesystem keeps its files in the page cache")
    fd, dfd = os.open(path, os.O_RDONLY), _direct_fd(path)
    res = Residency.of(fd)
    assert res is not None
    try:
        assert not res.holds(0, len(data)) and not res.holds(10 * ALIGN, 1)
        assert not res.holds(0, len(data))  # asking brought nothing in
        pipe = Pipeline(buffers=2, buffer_bytes=32 * ALIGN, advance=lambda t, n: None)
        view = pipe._fill(Read(fd, 5, 20 * ALIGN, direct_fd=dfd, resident=res), pipe._pool.get_nowait())
        assert bytes(view) == data[5 : 5 + 20 * ALIGN]
        assert (pipe.direct_bytes, pipe.cached_bytes) == (20 * ALIGN, 0)
        assert not res.holds(5, 20 * ALIGN)  # O_DIRECT left the cache alone
        pipe.release(view)
        os.pread(fd, 30 * ALIGN, 30 * ALIGN)  # now these pages are cached
        assert res.holds(30 * ALIGN + 1, 29 * ALIGN)
        view = pipe._fill(Read(fd, 30 * ALIGN + 1, 29 * ALIGN, direct_fd=dfd, resident=res), pipe._pool.get_nowait())
        assert bytes(view) == data[30 * ALIGN + 1 : 59 * ALIGN + 1]
        assert (pipe.direct_bytes, pipe.cached_bytes) == (20 * ALIGN, 29 * ALIGN)
    finally:
        res.close()
        os.close(fd)
        os.close(dfd)


@pytest.mark.parametrize("like", [8 + 80, 8 + 4096 * 3 + 16, 8 + 3000])
def test_a_header_padded_like_another_file_is_read_by_safetensors(tmp_path: Path, like: int) -> None:
    """The output header gets the base's data offset modulo the block size (spaces after the JSON,
    which the format allows); the real safetensors reader and torch take the file as it is."""
    import torch
    from safetensors import safe_open

    from patchctl.merge._io import encode_header

    values = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    header = {"t": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}}
    head = encode_header(header, like=like)
    assert len(head) % ALIGN == like % ALIGN and len(head) % 8 == 0
    assert 0 <= len(head) - len(encode_header(header)) < ALIGN  # the fewest spaces that do it
    path = tmp_path / "t.safetensors"
    path.write_bytes(head + values.numpy().tobytes())
    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(f.get_tensor("t"), values)
    assert len(encode_header({"t": {}}, like=8 + 3)) % 8 == 0  # not a multiple of 8: no padding to it


def test_direct_sink_hands_what_o_direct_refuses_to_the_cached_descriptor(tmp_path: Path) -> None:
    """O_DIRECT refuses a write (EINVAL: here from unaligned memory; in practice a write that would
    cross RLIMIT_FSIZE, see test_reliability): it goes through the file's plain descriptor, and so
    do the writes after it; the file is still right."""
    from patchctl.merge._copy import DirectSink

    path = tmp_path / "out.bin"
    direct = _direct_writer(path)
    plain = os.open(path, os.O_WRONLY)
    sink = DirectSink(direct, fallback=plain)
    first = os.urandom(3 * ALIGN + 1)
    sink._pwrite(memoryview(first)[1:], 0)  # bytes objects are not page-aligned: refused
    assert sink._refused
    rest = os.urandom(10_000)
    sink.size = 3 * ALIGN
    sink.write(3 * ALIGN, memoryview(rest))
    sink.close()
    os.close(plain)
    assert path.read_bytes() == first[1:] + rest


@pytest.mark.parametrize("nbytes", [0, 1, CachedHashing.PIECE - 1, CachedHashing.PIECE, 3 * CachedHashing.PIECE + 17])
def test_cached_hashing_hands_on_every_byte_in_order(nbytes: int) -> None:
    """The pieces the hashes see are the data's bytes, in order, whatever its length and format
    (a float32 view is cast to bytes); a StreamHash fed this way is the file's sha256."""
    import array
    import hashlib

    raw = bytes(range(256)) * (nbytes // 256 + 1)
    data = memoryview(raw[:nbytes])
    assert b"".join(bytes(p) for p in CachedHashing().pieces(data)) == raw[:nbytes]
    floats = array.array("f", range(nbytes // 4))
    assert b"".join(bytes(p) for p in CachedHashing().pieces(memoryview(floats))) == floats.tobytes()
    stream = StreamHash(b"head")
    stream.wrote(4, data)
    stream.wrote(4 + nbytes, memoryview(floats))
    total = 4 + nbytes + len(floats.tobytes())
    assert stream.hexdigest(total) == hashlib.sha256(b"head" + raw[:nbytes] + floats.tobytes()).hexdigest()
