import hashlib
import os
import time
from pathlib import Path

from patchctl._fs import HashCache
from patchctl.bases import read_local_base


def _age(path: Path, seconds: float = 10) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_cached_digest_is_reused_and_invalidated_by_a_change(tmp_path: Path) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 1000)
    _age(f)
    cache = HashCache(tmp_path / "cache")
    assert cache.sha256(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(list((tmp_path / "cache").rglob("*"))) == 2  # one shard dir, one entry
    # poison the entry: a hit must come from the cache (proves it is read, not recomputed)
    [entry] = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    entry.write_text("0" * 64)
    assert cache.sha256(f) == "0" * 64
    # same size, new content and mtime: the stat key changes, the digest is recomputed
    f.write_bytes(b"b" * 1000)
    _age(f, 5)
    assert cache.sha256(f) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_a_just_written_file_is_not_cached(tmp_path: Path) -> None:
    f = tmp_path / "fresh"
    f.write_bytes(b"x")
    cache = HashCache(tmp_path / "cache")
    assert cache.sha256(f) == hashlib.sha256(b"x").hexdigest()
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_read_local_base_with_cache_gives_the_same_facts(pico_llama_sharded: Path, tmp_path: Path) -> None:
    cache = HashCache(tmp_path / "cache")
    plain = read_local_base(pico_llama_sharded)
    assert read_local_base(pico_llama_sharded, hash_cache=cache) == plain
    assert read_local_base(pico_llama_sharded, hash_cache=cache) == plain
