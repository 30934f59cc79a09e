"""Identical weights re-sharded (other files, same tensors) are recognised as the same base."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from patchctl import api
from patchctl._fs import HashCache
from patchctl.bases import hash_file_and_tensors, read_local_base, read_safetensors_header
from patchctl.lineage import lineage
from patchctl.resolving import resolve_onto
from patchctl.settings import Settings


def test_per_tensor_digests_match_the_bytes(pico_llama: Path) -> None:
    path = pico_llama / "model.safetensors"
    header = read_safetensors_header(path)
    raw = path.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")
    want = {
        n: hashlib.sha256(raw[start + i["data_offsets"][0] : start + i["data_offsets"][1]]).hexdigest()
        for n, i in header.items()
        if n != "__metadata__"
    }
    for chunk in (7, 64, 1000, 1 << 20):  # tensors straddling chunk boundaries
        digest, per = hash_file_and_tensors(path, header, chunk_size=chunk)
        assert digest == hashlib.sha256(raw).hexdigest() and per == want
    # past the page cache (O_DIRECT, a base larger than a quarter of the RAM): aligned chunks,
    # the file's length not a multiple of them; an unaligned chunk size reads through the cache
    for chunk in (4096, 8192, 286720, 1 << 20, 1000):  # 286720: a 256 KiB piece and a shorter one
        digest, per = hash_file_and_tensors(path, header, chunk_size=chunk, direct=True)
        assert digest == hashlib.sha256(raw).hexdigest() and per == want
    with safe_open(str(path), "np") as f:
        assert set(f.keys()) == set(per)


def test_resharded_base_has_the_same_tensor_fingerprint(
    pico_llama: Path, pico_llama_sharded: Path, tmp_path: Path
) -> None:
    one, many = read_local_base(pico_llama), read_local_base(pico_llama_sharded)
    assert one.weights_sha256 != many.weights_sha256
    assert one.tensors_sha256 is not None and one.tensors_sha256 == many.tensors_sha256
    # remembered with the file hashes (files older than 2 s): a second read reads no weights
    copy = tmp_path / "copy"
    shutil.copytree(pico_llama_sharded, copy)
    for f in copy.iterdir():
        os.utime(f, (time.time() - 60, time.time() - 60))
    cache = HashCache(tmp_path / "cache" / "sha256")
    first = read_local_base(copy, hash_cache=cache)
    assert first.tensors_sha256 == many.tensors_sha256 and first.weights_sha256 == many.weights_sha256
    entries = list((tmp_path / "cache" / "tensors").rglob("*.json"))
    assert len(entries) == len(list(copy.glob("*.safetensors")))
    for shard in copy.glob("*.safetensors"):  # flip the last byte in place, same inode/size/mtime:
        st = shard.stat()  # only an answer from the cache can still equal the first read
        with open(shard, "r+b") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 0xFF]))
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert read_local_base(copy, hash_cache=cache) == first
    assert read_local_base(copy) != first  # without the cache the change is seen


def test_resharded_base_ranks_as_the_same_base(
    tmp_path: Path, llama_adapter: Path, pico_llama: Path, pico_llama_sharded: Path
) -> None:
    settings = Settings.resolve(home=str(tmp_path / "home"))
    api.push(settings, llama_adapter, base_dir=pico_llama, name="acme/p", version="1.0.0", task="t")
    res = api.base_add(settings, pico_llama_sharded)
    assert [e.relation for e in res.edges] == []  # recorded by the catalog itself, not by --parent
    listing = api.base_list(settings)
    assert [(e.relation) for e in listing.edges] == ["identical-weights"]
    chosen = resolve_onto(settings, "acme/p", onto=str(pico_llama_sharded))
    (c,) = chosen.candidates
    assert chosen.chosen == "acme/p==1.0.0" and c.rank == 2 and "identical weights" in c.reason
    g = lineage(settings, "acme/p")
    assert {e.relation for e in g.edges} == {"identical-weights"}


def test_read_chunks_direct_gives_the_file_in_order(tmp_path: Path) -> None:
    from patchctl._fs import read_chunks

    for size in (0, 1, 4096, 4097, 3 * 8192 - 5):
        path = tmp_path / f"f{size}"
        data = os.urandom(size)
        path.write_bytes(data)
        for direct in (False, True):
            assert b"".join(bytes(c) for c in read_chunks(path, 8192, direct=direct)) == data


def test_read_chunks_direct_takes_cached_chunks_from_the_cache_and_leaves_the_rest_out(tmp_path: Path) -> None:
    """A file partly in the page cache: its chunks are right either way, the cached ones stay
    cached, and the O_DIRECT reads bring nothing into the cache."""
    from patchctl._fs import Residency, read_chunks

    chunk = 8192
    data = os.urandom(10 * chunk + 123)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        res = Residency.of(fd)
        if res is None or res.holds(0, len(data)):
            pytest.skip("no residency map, or a filesystem that keeps files in the page cache")
        os.pread(fd, 2 * chunk, 4 * chunk)  # chunks 4 and 5 are cached now
        assert res.holds(4 * chunk, 2 * chunk)
        assert b"".join(bytes(c) for c in read_chunks(path, chunk, direct=True)) == data
        assert res.holds(4 * chunk, 2 * chunk)
        assert not res.holds(0, chunk) and not res.holds(8 * chunk, chunk)
        res.close()
    finally:
        os.close(fd)
