"""The Python API of patchctl. The CLI calls only this module; so can scripts and CI jobs.

Every function takes the resolved :class:`~patchctl.settings.Settings` first and returns
plain records (:mod:`patchctl.registry.records` or the dataclasses below).

``push`` runs in stages, each of which can fail without leaving a trace in the catalog:

1. **prepare**: read the adapter (LoRA only, safetensors only) and the source base
   (fingerprints), build the :class:`~patchctl.schemas.manifest.Manifest`;
2. **stage**: copy the files and ``patch.json`` into the content store (verified by sha256;
   blobs nothing refers to are harmless);
3. **publish** (optional callback): copy the staged files to a remote; only a copy that
   succeeded is recorded;
4. **record**: one catalog transaction (patch, version, files, source base, remote copy).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from patchctl import __version__
from patchctl._fs import sha256_file
from patchctl._text import check_text
from patchctl.adapter import AdapterLayout
from patchctl.errors import AdapterError, InvalidInputError, NotFoundError
from patchctl.registry.blobs import BlobStore, materialize
from patchctl.registry.db import SchemaState, make_engine, schema_state, upgrade
from patchctl.registry.records import (
    AliasInfo,
    Ancestor,
    BaseInfo,
    CompatReportRecord,
    InstallRecord,
    LineageEdge,
    PatchSummary,
    RemoteCopy,
    ValidationRecord,
    VersionInfo,
)
from patchctl.registry.store import Catalog, open_catalog
from patchctl.schemas.base import BaseFacts
from patchctl.schemas.manifest import (
    EVAL_DIR,
    MANIFEST_FILE,
    FileEntry,
    Manifest,
    SourceBase,
    check_patch_name,
    normalize_version,
)
from patchctl.schemas.peft_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from patchctl.schemas.refs import HubRef, PatchRef, parse_base_ref, parse_patch_ref
from patchctl.settings import Settings

__all__ = [
    "BaseAddResult",
    "BaseListing",
    "CheckOutcome",
    "CiOutcome",
    "CiResult",
    "EvalOptions",
    "InstallOutcome",
    "OutdatedPatch",
    "PatchDetails",
    "PreparedPush",
    "PublishedCopy",
    "Publisher",
    "PullResult",
    "PushResult",
    "ValidationOutcome",
    "alias_list",
    "alias_remove",
    "alias_set",
    "base_add",
    "base_list",
    "catalog",
    "check",
    "checked_adapter",
    "ci",
    "ci_plan",
    "db_current",
    "db_upgrade",
    "install",
    "list_patches",
    "materialize_version",
    "outdated",
    "prepare_push",
    "publisher_for",
    "pull",
    "push",
    "read_base",
    "remote_url_for",
    "resolve",
    "search",
    "show",
    "unyank",
    "validate",
    "yank",
]

#: files of a patch version, in the order they are staged
PATCH_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)


@contextmanager
def catalog(settings: Settings) -> Iterator[Catalog]:
    """The catalog of ``settings`` (stale schemas refused), closed on exit."""
    cat = open_catalog(settings)
    try:
        yield cat
    finally:
        cat.close()


def _store(settings: Settings) -> BlobStore:
    return BlobStore(settings.store_dir)


# -- push ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedCopy:
    """What a publisher reports: where the version now lives and at which revision/commit."""

    url: str
    revision: str | None = None


#: ``publish(manifest, staged_dir)``: copy ``staged_dir`` (the version's files + patch.json) to a
#: remote and say where; raise a PatchctlError (e.g. RemoteError) to abort the push unrecorded.
Publisher = Callable[[Manifest, Path], PublishedCopy]


@dataclass(frozen=True)
class PreparedPush:
    manifest: Manifest
    adapter_dir: Path
    base: BaseFacts
    #: the eval set's folder (its files are the manifest's files under eval/)
    eval_dir: Path | None = None

    def file_path(self, rel: str) -> Path:
        """Where a manifest file is on disk before staging."""
        prefix = EVAL_DIR + "/"
        if self.eval_dir is not None and rel.startswith(prefix):
            return self.eval_dir / rel[len(prefix) :]
        return self.adapter_dir / rel


@dataclass(frozen=True)
class EvalOptions:
    """``push --eval``: the eval folder, tasks and metric gated on, thresholds, baseline scoring."""

    eval_dir: Path
    tasks: tuple[str, ...] = ()
    metric: str | None = None
    min_score: float | None = None
    max_drop: float | None = 0.02
    min_retained: float | None = None
    trust_eval_code: bool = False
    #: score θ unpatched and patched at push (``--no-baseline``: False)
    baseline: bool = True
    limit: int | None = None
    batch_size: int = 1
    device: str = "auto"


@dataclass(frozen=True)
class PushResult:
    version: VersionInfo
    #: False: this exact content was already recorded (re-push is a no-op)
    created: bool
    remote: RemoteCopy | None = None

    @property
    def manifest(self) -> Manifest:
        return self.version.manifest


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


def prepare_push(
    adapter_dir: Path,
    *,
    name: str,
    version: str,
    task: str,
    base_dir: Path,
    base_revision: str | None = None,
    description: str = "",
    license: str | None = None,
    show_progress: bool = False,
    settings: Settings | None = None,
    eval_options: EvalOptions | None = None,
) -> PreparedPush:
    """Stage 1 of push: validate the inputs and build the manifest. Writes nothing (but the
    hash cache of ``settings``, if given)."""
    from patchctl.adapter import map_to_base

    try:
        name = check_patch_name(name)
        version = normalize_version(version)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if not task.strip():
        raise InvalidInputError("--task must not be empty (e.g. 'sst2 sentiment classification')")
    check_text(task, "--task")
    check_text(description, "--description", allow_newlines=True)
    if license is not None:
        check_text(license, "--license")
    adapter_dir = Path(adapter_dir).expanduser()
    layout = checked_adapter(adapter_dir)
    base_dir = Path(base_dir).expanduser()
    facts = read_base(base_dir, revision=base_revision, show_progress=show_progress, settings=settings)
    mapping = map_to_base(layout, facts.tensors, facts.config)
    if not mapping.complete:
        missing = [*mapping.unmatched, *mapping.ambiguous][:5]
        raise AdapterError(
            f"{adapter_dir}: the adapter does not fit the base {base_dir} "
            f"({len(mapping.unmatched)} unmatched, {len(mapping.ambiguous)} ambiguous, e.g. {', '.join(missing)})",
            hint="is --base the model this adapter was trained on?",
        )
    files = tuple(
        FileEntry(path=fname, sha256=sha256_file(adapter_dir / fname), size=(adapter_dir / fname).stat().st_size)
        for fname in PATCH_FILES
    )
    eval_spec = None
    eval_dir = None
    if eval_options is not None:
        from patchctl.evaluate import build_eval_spec, read_eval_folder, refuse_untrusted_code

        eval_dir = Path(eval_options.eval_dir).expanduser()
        folder = read_eval_folder(eval_dir)
        refuse_untrusted_code(folder.code, where=str(eval_dir), trust=eval_options.trust_eval_code)
        eval_spec = build_eval_spec(
            folder,
            tasks=eval_options.tasks,
            metric=eval_options.metric,
            min_score=eval_options.min_score,
            max_drop=eval_options.max_drop,
            min_retained=eval_options.min_retained,
        )
        files += tuple(f.model_copy(update={"path": f"{EVAL_DIR}/{f.path}"}) for f in folder.files)
    manifest = Manifest(
        name=name,
        version=version,
        task=task.strip(),
        description=description,
        license=license,
        created_at=datetime.now(timezone.utc).replace(microsecond=0),
        patchctl_version=__version__,
        lora=layout.lora_spec(),
        source_base=SourceBase(
            repo=facts.source,
            revision=facts.revision,
            weights_sha256=facts.weights_sha256,
            structure_sha256=facts.structure_sha256,
            family=facts.family,
            tokenizer_sha256=facts.tokenizer_sha256,
            tokenizer=facts.tokenizer,
        ),
        files=files,
        eval=eval_spec,
    )
    return PreparedPush(manifest=manifest, adapter_dir=adapter_dir, base=facts, eval_dir=eval_dir)


def _stage(store: BlobStore, prepared: PreparedPush) -> str:
    """Stage 2: files and patch.json into the content store. Returns patch.json's sha256."""
    for f in prepared.manifest.files:
        store.put_file(prepared.file_path(f.path), expected_sha256=f.sha256)
    return store.put_bytes(prepared.manifest.to_json().encode())


def _publish(store: BlobStore, manifest: Manifest, publish: Publisher) -> PublishedCopy:
    """Stage 3: lay the version out in a temporary directory and hand it to the publisher."""
    store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"patchctl-publish-{os.getpid()}-", dir=store.root) as tmp:
        staged = materialize(store, manifest.files, Path(tmp) / "patch")
        (staged / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        return publish(manifest, staged)


def push(
    settings: Settings,
    adapter_dir: Path,
    *,
    name: str,
    version: str,
    task: str,
    base_dir: Path,
    base_revision: str | None = None,
    description: str = "",
    license: str | None = None,
    publish: Publisher | None = None,
    show_progress: bool = False,
    eval_options: EvalOptions | None = None,
) -> PushResult:
    """Record a PEFT LoRA adapter as ``name==version`` (see the module docstring for the stages).

    Identical content already recorded → ``created=False`` and nothing changes (a publisher, if
    given, still publishes and the copy is recorded). Different content → ConflictError.
    """
    prepared = prepare_push(
        adapter_dir,
        name=name,
        version=version,
        task=task,
        base_dir=base_dir,
        base_revision=base_revision,
        description=description,
        license=license,
        show_progress=show_progress,
        settings=settings,
        eval_options=eval_options,
    )
    manifest = prepared.manifest
    store = _store(settings)
    with catalog(settings) as cat:
        try:
            known: VersionInfo | None = cat.get_version(manifest.name, manifest.version)
        except NotFoundError:
            known = None
        if known is not None:
            # identical → no-op; different → ConflictError, before anything is written
            result = cat.add_version(manifest, manifest_sha256=known.manifest_sha256)
            for f in known.files:  # the same bytes again: a damaged store blob is restored
                store.put_file(prepared.adapter_dir / f.path, expected_sha256=f.sha256)
            store.put_bytes(known.manifest.to_json().encode())
            if publish is None:
                return PushResult(result.version, created=False)
            again = _publish(store, known.manifest, publish)
            copied = cat.record_remote(known.name, known.version, again.url, again.revision)
            return PushResult(result.version, created=False, remote=copied)
        if eval_options is not None and eval_options.baseline and manifest.eval is not None:
            prepared = _with_baseline(prepared, eval_options, show_progress=show_progress)
            manifest = prepared.manifest
        manifest_sha = _stage(store, prepared)
        copy = _publish(store, manifest, publish) if publish is not None else None
        result = cat.add_version(
            manifest,
            manifest_sha256=manifest_sha,
            base=prepared.base,
            remote=(copy.url, copy.revision) if copy is not None else None,
        )
        remote: RemoteCopy | None = None
        if copy is not None:
            remote = next(r for r in cat.list_remotes(manifest.name, manifest.version) if r.url == copy.url)
        if result.created and manifest.eval is not None and all(t.baseline for t in manifest.eval.tasks):
            from patchctl.evaluate._run import record_baseline

            record_baseline(cat, manifest, base_ref=str(prepared.base.source))
        return PushResult(result.version, created=result.created, remote=remote)


def _with_baseline(prepared: PreparedPush, options: EvalOptions, *, show_progress: bool) -> PreparedPush:
    """Score the eval set on the source base θ, unpatched and patched; the baseline goes into the manifest."""
    from dataclasses import replace

    from patchctl.evaluate._run import score_baseline

    manifest = prepared.manifest
    assert manifest.eval is not None and prepared.eval_dir is not None
    spec = score_baseline(
        prepared.adapter_dir,
        Path(prepared.base.source),
        manifest.eval,
        base_weights_sha256=prepared.base.weights_sha256,
        limit=options.limit,
        batch_size=options.batch_size,
        device=options.device,
        eval_dir=prepared.eval_dir,
        progress=show_progress,
    )
    return replace(prepared, manifest=manifest.model_copy(update={"eval": spec}))


def materialize_version(settings: Settings, version: VersionInfo, dest: Path, *, link: bool = True) -> Path:
    """Lay out a recorded version's files (a PEFT adapter directory) plus patch.json in ``dest``."""
    store = _store(settings)
    out = materialize(store, version.files, dest, link=link)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    (out / MANIFEST_FILE).write_bytes(store.read_bytes(version.manifest_sha256))
    return out


# -- list / show / resolve ------------------------------------------------------------------


def list_patches(
    settings: Settings,
    namespace: str | None = None,
    *,
    limit: int | None = None,
    cursor: str | None = None,
    validated_on: str | None = None,
) -> list[PatchSummary]:
    """Patches by name; ``limit`` of them after ``cursor`` (the last name of the previous page).
    ``validated_on`` (a base directory, ``hf://repo@rev`` or weights fingerprint) keeps those with a
    version that passed validation on exactly that base."""
    with catalog(settings) as cat:
        if validated_on is None:
            return cat.list_patches(namespace, limit=limit, after=cursor)
        sha = _base_fingerprint(cat, validated_on, settings=settings)
        names = cat.validated_names(sha)
        patches = [p for p in cat.list_patches(namespace, after=cursor) if p.name in names]
        return patches if limit is None else patches[:limit]


def _base_fingerprint(cat: Catalog, text: str, *, settings: Settings) -> str:
    """The weights fingerprint of a base named by fingerprint (prefix), ``hf://repo@rev`` known to
    the catalog, or a local directory (hashed, not recorded)."""
    if re.fullmatch(r"[0-9a-fA-F]{8,64}", text) and not Path(text).exists():
        return cat.get_base(text).weights_sha256
    ref = parse_base_ref(text)
    if isinstance(ref, HubRef):
        found = cat.find_bases(f"hf://{ref.repo_id}", ref.revision)
        if len(found) != 1:
            raise NotFoundError(f"{text}: {len(found)} recorded bases match; give a commit or a fingerprint")
        return found[0].weights_sha256
    return read_base(ref.path, settings=settings).weights_sha256


def _patch_ref(text: str) -> PatchRef:
    ref = parse_patch_ref(text)
    if not isinstance(ref, PatchRef):
        raise InvalidInputError(f"{text!r}: expected a catalog patch (org/name, org/name==1.0, org/name@alias)")
    return ref


def resolve(settings: Settings, ref: str) -> VersionInfo:
    with catalog(settings) as cat:
        return cat.resolve(_patch_ref(ref)).version


@dataclass(frozen=True)
class VersionRow:
    version: str
    yanked: bool
    created_at: datetime


@dataclass(frozen=True)
class PatchDetails:
    version: VersionInfo
    via: str
    versions: tuple[VersionRow, ...]
    aliases: tuple[AliasInfo, ...]
    source_base: BaseInfo | None
    lineage: tuple[Ancestor, ...]
    remotes: tuple[RemoteCopy, ...]
    compat_reports: tuple[CompatReportRecord, ...]
    validations: tuple[ValidationRecord, ...]
    installs: tuple[InstallRecord, ...]


def show(
    settings: Settings,
    ref: str,
    *,
    all_reports: bool = False,
    limit: int | None = None,
    reports_cursor: int | None = None,
    installs_cursor: int | None = None,
) -> PatchDetails:
    """Everything the catalog knows about one version (``org/name`` → the newest non-yanked).

    Compat reports: the newest per base unless ``all_reports``; reports and installs: ``limit``
    rows (newest first) older than their cursor (the last id of the previous page)."""
    with catalog(settings) as cat:
        resolved = cat.resolve(_patch_ref(ref))
        v = resolved.version
        try:
            source = cat.get_base(v.manifest.source_base.weights_sha256)
        except NotFoundError:
            source = None
        return PatchDetails(
            version=v,
            via=resolved.via,
            versions=tuple(VersionRow(*x) for x in cat.list_version_rows(v.name)),
            aliases=tuple(cat.list_aliases(v.name)),
            source_base=source,
            lineage=tuple(cat.ancestors(v.manifest.source_base.weights_sha256)),
            remotes=tuple(cat.list_remotes(v.name, v.version)),
            compat_reports=tuple(
                cat.list_compat_reports(
                    v.name, v.version, latest_per_base=not all_reports, limit=limit, before=reports_cursor
                )
            ),
            validations=tuple(cat.list_validations(v.name, v.version)),
            installs=tuple(cat.list_installs(v.name, v.version, limit=limit, before=installs_cursor)),
        )


# -- aliases and yank -------------------------------------------------------------------------


def _name_and_version(ref: str, version: str | None) -> tuple[str, str]:
    """``org/name 1.0`` or ``org/name==1.0`` / ``org/name@1.0`` → (name, version)."""
    pref = _patch_ref(ref)
    from patchctl.registry.resolver import exact_version

    pinned = exact_version(pref)
    if pref.alias or (pref.spec is not None and pinned is None):
        raise InvalidInputError(f"{ref!r}: name one exact version (org/name==1.0.0)")
    if pinned and version and normalize_version(version) != pinned:
        raise InvalidInputError(f"{ref!r} and version {version!r} disagree")
    v = pinned or version
    if not v:
        raise InvalidInputError(f"{ref!r}: which version? (org/name==1.0.0)")
    try:
        return pref.name, normalize_version(v)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def alias_set(settings: Settings, ref: str, alias: str, version: str | None = None) -> AliasInfo:
    name, v = _name_and_version(ref, version)
    with catalog(settings) as cat:
        return cat.set_alias(name, alias, v)


def alias_remove(settings: Settings, name: str, alias: str) -> None:
    with catalog(settings) as cat:
        cat.remove_alias(_patch_ref(name).name, alias)


def alias_list(settings: Settings, name: str) -> list[AliasInfo]:
    with catalog(settings) as cat:
        return cat.list_aliases(_patch_ref(name).name)


def yank(settings: Settings, ref: str, version: str | None = None, *, reason: str | None = None) -> VersionInfo:
    if reason is not None:
        check_text(reason, "--reason")
    name, v = _name_and_version(ref, version)
    with catalog(settings) as cat:
        return cat.yank(name, v, reason)


def unyank(settings: Settings, ref: str, version: str | None = None) -> VersionInfo:
    name, v = _name_and_version(ref, version)
    with catalog(settings) as cat:
        return cat.unyank(name, v)


# -- bases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseAddResult:
    base: BaseInfo
    created: bool
    edges: tuple[LineageEdge, ...] = ()


@dataclass(frozen=True)
class BaseListing:
    bases: tuple[BaseInfo, ...]
    edges: tuple[LineageEdge, ...] = field(default_factory=tuple)


def _parent_fingerprint(cat: Catalog, text: str, *, show_progress: bool, settings: Settings) -> str:
    """A parent given as a weights fingerprint (or prefix), ``hf://repo@rev`` known to the
    catalog, or a local base directory (read and recorded)."""

    if re.fullmatch(r"[0-9a-fA-F]{8,64}", text) and not Path(text).exists():
        return cat.get_base(text).weights_sha256
    ref = parse_base_ref(text)
    if isinstance(ref, HubRef):
        found = cat.find_bases(f"hf://{ref.repo_id}", ref.revision)
        if not found:
            raise NotFoundError(
                f"{text}: no such base in the catalog", hint="add it first (patchctl base add), or give its fingerprint"
            )
        if len(found) > 1:
            raise InvalidInputError(f"{text}: {len(found)} bases match; give a revision or a fingerprint")
        return found[0].weights_sha256
    facts = read_base(ref.path, show_progress=show_progress, settings=settings)
    base, _ = cat.add_base(facts)
    return base.weights_sha256


def base_add(
    settings: Settings,
    base_dir: Path,
    *,
    revision: str | None = None,
    parents: Sequence[str] = (),
    relation: str = "update",
    show_progress: bool = False,
) -> BaseAddResult:
    """Record a local base (fingerprinted) and its lineage edges to ``parents``."""
    from patchctl.registry.store import LINEAGE_RELATIONS

    if relation not in LINEAGE_RELATIONS:
        raise InvalidInputError(f"relation {relation!r}: expected one of {', '.join(LINEAGE_RELATIONS)}")
    base_dir = Path(base_dir).expanduser()
    facts = read_base(base_dir, revision=revision, show_progress=show_progress, settings=settings)
    with catalog(settings) as cat:
        parent_shas = [_parent_fingerprint(cat, p, show_progress=show_progress, settings=settings) for p in parents]
        base, created = cat.add_base(facts)
        edges = tuple(cat.add_lineage(base.weights_sha256, p, relation) for p in parent_shas)
        return BaseAddResult(base, created, edges)


def base_list(settings: Settings, *, limit: int | None = None, cursor: str | None = None) -> BaseListing:
    """Recorded bases and their parents; ``limit`` of them after ``cursor`` (a weights fingerprint)."""
    with catalog(settings) as cat:
        bases = tuple(cat.list_bases(limit=limit, after=cursor))
        children = None if limit is None and cursor is None else [b.weights_sha256 for b in bases]
        return BaseListing(bases, tuple(cat.list_lineage(children)))


# -- database ---------------------------------------------------------------------------------


def db_upgrade(settings: Settings) -> SchemaState:
    engine = make_engine(settings.database_url, create_dir=settings.uses_default_database)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


def db_current(settings: Settings) -> SchemaState:
    engine = make_engine(settings.database_url, create_dir=settings.uses_default_database)
    try:
        return schema_state(engine)
    finally:
        engine.dispose()


# -- check / install / remotes (implemented in their own modules) ---------------------------

from patchctl.evaluate._ci import CiOutcome, CiResult, ci, ci_plan  # noqa: E402
from patchctl.evaluate._outdated import OutdatedPatch, outdated  # noqa: E402
from patchctl.evaluate._run import ValidationOutcome, validate  # noqa: E402
from patchctl.installer import CheckOutcome, InstallOutcome, check, install  # noqa: E402
from patchctl.sync import PullResult, publisher_for, pull, remote_url_for, search  # noqa: E402
