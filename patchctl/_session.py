"""What the modules of patchctl share: the catalog and the content store of a home, reading a
base, reading an adapter about to become a version, laying a version out, and the publisher types.

It sits below :mod:`patchctl.api` (the façade), :mod:`patchctl.pushing`, :mod:`patchctl.installer`,
:mod:`patchctl.sync` and :mod:`patchctl.evaluate`, which all import it; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchctl.errors import AdapterError, InvalidInputError
from patchctl.registry.blobs import BlobStore, materialize
from patchctl.registry.records import VersionInfo
from patchctl.registry.store import Catalog, open_catalog
from patchctl.settings import Settings

if TYPE_CHECKING:
    from patchctl.adapter import AdapterLayout
    from patchctl.schemas.base import BaseFacts
    from patchctl.schemas.manifest import Manifest

__all__ = [
    "PublishedCopy",
    "Publisher",
    "catalog",
    "checked_adapter",
    "content_store",
    "materialize_version",
    "read_base",
]


@contextmanager
def catalog(settings: Settings) -> Iterator[Catalog]:
    """The catalog of ``settings`` (stale schemas refused), closed on exit."""
    cat = open_catalog(settings)
    try:
        yield cat
    finally:
        cat.close()


def content_store(settings: Settings) -> BlobStore:
    """The content store of ``settings`` (content-addressed blobs of every recorded version)."""
    return BlobStore(settings.store_dir)


@dataclass(frozen=True)
class PublishedCopy:
    """What a publisher reports: where the version now lives and at which revision/commit."""

    url: str
    revision: str | None = None


#: ``publish(manifest, staged_dir)``: copy ``staged_dir`` (the version's files + patch.json) to a
#: remote and say where; raise a PatchctlError (e.g. RemoteError) to abort the push unrecorded.
Publisher = Callable[["Manifest", Path], PublishedCopy]


@contextmanager
def _hash_progress(base_dir: Path, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from patchctl.bases import weight_file_names

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    try:
        total = sum((base_dir / n).stat().st_size for n in weight_file_names(base_dir))
    except (InvalidInputError, OSError):
        total = None
    with Progress(
        TextColumn("hashing base"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("hash", total=total)
        yield lambda n: bar.advance(task, n)


def read_base(
    base_dir: Path,
    *,
    revision: str | None = None,
    show_progress: bool = False,
    settings: Settings | None = None,
) -> BaseFacts:
    """Facts of a local base directory: its weights hashed (with a progress bar on stderr if asked),
    or their sha256 taken from the home's hash cache when the files are unchanged."""
    from patchctl._fs import HashCache
    from patchctl.bases import read_local_base

    base_dir = Path(base_dir).expanduser()
    cache = HashCache(settings.hash_cache_dir) if settings is not None else None
    with _hash_progress(base_dir, show_progress) as progress:
        return read_local_base(base_dir, revision=revision, progress=progress, hash_cache=cache)


def checked_adapter(adapter_dir: Path) -> AdapterLayout:
    """Read an adapter that is about to become an immutable version (push, pull) and refuse it
    (exit 4) unless it is complete: a plain LoRA config with finite numbers, a safetensors header
    that is valid against the file (contiguous, in bounds, exact size), paired LoRA tensors, and
    every value floating and finite."""
    from patchctl.adapter import read_adapter
    from patchctl.checks._tensors import FLOAT_DTYPES, nonfinite_count
    from patchctl.schemas.peft_config import ADAPTER_WEIGHTS

    layout = read_adapter(adapter_dir)
    if layout.problems:
        raise AdapterError(f"{adapter_dir}: " + "; ".join(layout.problems))
    if not layout.pairs and not layout.replacements:
        raise AdapterError(f"{adapter_dir}: {ADAPTER_WEIGHTS} holds no LoRA tensors")
    for p in layout.pairs:
        r = layout.config.rank_for(p.module)
        if len(p.a_shape) != 2 or len(p.b_shape) != 2 or p.a_shape[0] != r or p.b_shape[1] != r:
            raise AdapterError(
                f"{adapter_dir}: {p.module}: A{list(p.a_shape)} / B{list(p.b_shape)} disagree with r={r} "
                "(A must be [r, in], B [out, r])"
            )
    bad: list[str] = []
    for key, info in sorted(layout.header.items()):
        if key == "__metadata__":
            continue
        if info["dtype"] not in FLOAT_DTYPES:
            raise AdapterError(f"{layout.weights_path}: tensor {key!r} is {info['dtype']}, not floating point")
        if nonfinite_count(layout.weights_path, info):
            bad.append(key)
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise AdapterError(f"{layout.weights_path}: NaN/inf values in {bad[0]}{more}")
    return layout


def materialize_version(settings: Settings, version: VersionInfo, dest: Path, *, link: bool = True) -> Path:
    """Lay out a recorded version's files (a PEFT adapter directory) plus patch.json in ``dest``."""
    from patchctl.schemas.manifest import MANIFEST_FILE

    store = content_store(settings)
    out = materialize(store, version.files, dest, link=link)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    (out / MANIFEST_FILE).write_bytes(store.read_bytes(version.manifest_sha256))
    return out
