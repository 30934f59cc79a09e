"""Writing an output directory atomically: a temporary sibling renamed into place, and the
``patchctl.json`` provenance file."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from patchctl import __version__
from patchctl._fs import fsync_dir, pid_alive, sha256_file
from patchctl._secrets import redact
from patchctl.errors import ConflictError, InvalidInputError

__all__ = ["FileRecord", "MergeResult", "atomic_output_dir", "write_provenance"]

PROVENANCE_FILE = "patchctl.json"
_TMP = re.compile(r"^\.(?P<name>.+)\.patchctl-(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class FileRecord:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class MergeResult:
    """What an install wrote. ``files`` excludes ``patchctl.json`` itself."""

    out_dir: Path
    format: Literal["merged", "adapter"]
    files: tuple[FileRecord, ...]
    tensors_touched: int = 0
    tensors_copied: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    #: tensors whose LoRA delta was computed whole, over the memory budget, because row blocks
    #: would not have given the whole product's bits on this machine's BLAS
    merged_whole: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "format": self.format,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "tensors_touched": self.tensors_touched,
            "tensors_copied": self.tensors_copied,
            "bytes_written": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "merged_whole": list(self.merged_whole),
        }


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _tmp_stem(name: str) -> str:
    """The output's name as it appears in its temporary siblings' names: short enough that
    ``.<stem>.patchctl-tmp-<pid>-<hex>`` fits any file system's 255-byte limit whatever the
    output's own name length (a long name keeps a prefix and a digest of the whole)."""
    if len(name.encode()) <= 64:
        return name
    import hashlib

    head = name.encode()[:40].decode("utf-8", "ignore")
    return f"{head}~{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def _clean_stale(parent: Path, name: str) -> None:
    """Remove temporary siblings left by installs that were killed (their process is gone)."""
    stem = _tmp_stem(name)
    for entry in parent.glob(f".{glob.escape(stem)}.patchctl-*"):
        m = _TMP.match(entry.name)
        if m and m["name"] == stem and not pid_alive(int(m["pid"])):
            _remove(entry)


def _is_within(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path, *, force: bool, protect: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``out_dir``; on success rename it into place.

    An existing ``out_dir`` is a ConflictError unless ``force``: then it is moved aside, the new
    directory renamed in, and the old one deleted. On any error (or a kill) nothing appears at
    ``out_dir``; a killed run's temporary directory is removed by the next run.
    """
    out_dir = Path(os.path.abspath(Path(out_dir).expanduser()))
    for p in protect:
        rp = Path(os.path.abspath(p))
        if out_dir == rp or _is_within(rp, out_dir) or _is_within(out_dir, rp):
            raise InvalidInputError(f"{out_dir}: the output directory must be outside {rp} (and not contain it)")
    if (out_dir.exists() or out_dir.is_symlink()) and not force:
        raise ConflictError(f"{out_dir} already exists", hint="pass --overwrite to replace it")
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(parent, out_dir.name)
    tmp = parent / f".{_tmp_stem(out_dir.name)}.patchctl-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
        if out_dir.exists() or out_dir.is_symlink():
            if not force:
                raise ConflictError(f"{out_dir} already exists", hint="pass --overwrite to replace it")
            old = parent / f".{_tmp_stem(out_dir.name)}.patchctl-old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(out_dir, old)
            try:
                os.rename(tmp, out_dir)
            except BaseException:
                os.rename(old, out_dir)
                raise
            _remove(old)
        else:
            os.rename(tmp, out_dir)
        fsync_dir(parent)
    except BaseException:
        _remove(tmp)
        raise


def record_files(root: Path, known: Mapping[str, FileRecord] | None = None) -> tuple[FileRecord, ...]:
    """sha256 and size of every regular file under ``root`` (relative POSIX paths), sorted.

    ``known`` holds records already computed (the shards, hashed while the merge went on)."""
    known = known or {}
    records = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != PROVENANCE_FILE:
            rel = p.relative_to(root).as_posix()
            records.append(known[rel] if rel in known else FileRecord(rel, sha256_file(p), p.stat().st_size))
    return tuple(records)


def write_provenance(
    root: Path,
    *,
    kind: Literal["merged", "adapter"],
    provenance: Mapping[str, Any],
    extra: Mapping[str, Any],
    known: Mapping[str, FileRecord] | None = None,
) -> tuple[tuple[FileRecord, ...], dict[str, Any]]:
    files = record_files(root, known)
    doc: dict[str, Any] = {
        "tool": "patchctl",
        "tool_version": __version__,
        "format": kind,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": dict(provenance),
        **extra,
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files],
    }
    with open(root / PROVENANCE_FILE, "w", encoding="utf-8") as f:
        f.write(redact(json.dumps(doc, indent=2, sort_keys=True, default=str)) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return files, doc
