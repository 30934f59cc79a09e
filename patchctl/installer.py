"""Check and install: a patch version against a target base, then θ′ + Δθ written to disk.

``check`` needs only config.json and safetensors headers of the target (local or on the Hub);
``install`` runs the same checks, refuses on failure unless forced (the forced install is
recorded as such), then merges (``--format merged``) or writes a rebased adapter
(``--format adapter``). Reports and installs of catalog versions are logged in the catalog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from patchctl import __version__
from patchctl._fs import pid_alive
from patchctl._session import catalog, materialize_version, read_base
from patchctl.errors import (
    CheckFailedError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RefError,
    UsageError,
)
from patchctl.registry.records import VersionInfo
from patchctl.schemas.base import BaseFacts
from patchctl.schemas.manifest import MANIFEST_FILE, FileEntry, Manifest
from patchctl.schemas.refs import HubRef, PatchRef, PathRef, RemoteRef, parse_base_ref, parse_patch_ref
from patchctl.schemas.report import CompatReport
from patchctl.settings import Settings

if TYPE_CHECKING:
    from patchctl._mergeproc import MergeWorker
    from patchctl.merge import MergePlan
    from patchctl.remotes._bases import ArrivingBase

__all__ = ["CheckOutcome", "InstallOutcome", "check", "install"]

log = logging.getLogger(__name__)

InstallFormat = Literal["merged", "adapter"]


@dataclass(frozen=True)
class PatchSource:
    """A patch made ready for checking: an adapter directory, its manifest, its catalog version."""

    ref: str
    adapter_dir: Path
    manifest: Manifest | None
    version: VersionInfo | None


@dataclass(frozen=True)
class TargetBase:
    ref: str
    facts: BaseFacts
    local_dir: Path | None
    hub: HubRef | None


@dataclass(frozen=True)
class CheckOutcome:
    report: CompatReport
    report_id: int | None
    patch: str
    base: str


@dataclass(frozen=True)
class InstallOutcome:
    check: CheckOutcome
    format: InstallFormat
    out_dir: Path | None
    dry_run: bool
    forced: bool
    plan: dict[str, Any] | None
    result: dict[str, Any] | None
    install_id: int | None
    #: how the resolver chose the version for this base (REQ not an exact pin), else None
    decision: dict[str, Any] | None = None


_MATERIALIZE_PREFIX = ".materialize-"


def _clean_stale_materializations(home: Path) -> None:
    """Remove the adapter copies of checks/installs that were killed (their process is gone)."""
    for entry in home.glob(f"{_MATERIALIZE_PREFIX}*-*"):
        pid = entry.name[len(_MATERIALIZE_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def patch_ref_or_directory(settings: Settings, text: str) -> PatchRef | HubRef | RemoteRef | PathRef:
    """What a user typed for a patch, where an existing directory wins: ``runs/x/adapter`` (no
    ``./``) is that directory, not a patch name. When the text is both a directory and a patch in
    the catalog, the directory is used and a one-line note on stderr says how to name the catalog
    patch instead (a version, specifier or alias: ``org/name==1.0``, ``org/name@stable``)."""
    stripped = text.strip()
    if stripped.startswith(("hf://", "file://")) or not stripped or not Path(stripped).expanduser().is_dir():
        try:
            return parse_patch_ref(stripped)
        except RefError as exc:
            if stripped.count("/") > 1 and "://" not in stripped:
                raise RefError(f"{stripped}: no such directory, and not a patch name (org/name)") from None
            raise exc from None
    try:
        named = parse_patch_ref(stripped)
    except RefError:
        named = None
    if isinstance(named, PatchRef) and named.version is None and named.spec is None and named.alias is None:
        with catalog(settings) as cat:
            in_catalog = named.name in {p.name for p in cat.list_patches(named.name.split("/", 1)[0])}
        if in_catalog:
            log.warning(
                "note: %r is both a local directory and a catalog patch; using the directory "
                "(name a version for the catalog patch, e.g. %s@stable or %s==1.0)",
                stripped,
                named.name,
                named.name,
            )
    return PathRef(Path(stripped).expanduser())


def _patch_source(settings: Settings, text: str, *, progress: bool) -> PatchSource:
    """The patch a user named, ready to check: a local adapter directory as it is, or a catalog
    (or remote, pulled first) version laid out under the home."""
    from patchctl.sync import pull

    ref = patch_ref_or_directory(settings, text)
    if isinstance(ref, PathRef):
        adapter_dir = ref.path
        if not adapter_dir.is_dir():
            raise NotFoundError(f"{adapter_dir}: no such adapter directory")
        mpath = adapter_dir / MANIFEST_FILE
        manifest = Manifest.read(mpath) if mpath.is_file() else None
        if manifest is not None:
            from patchctl.registry.blobs import layout_problems

            damaged = layout_problems(adapter_dir, manifest.files)
            if damaged:
                raise IntegrityError(
                    f"{adapter_dir}: the files differ from its {MANIFEST_FILE}: {'; '.join(damaged)}",
                    hint=f"restore the files, or remove {MANIFEST_FILE} to check the adapter as it is",
                )
        # an absolute path: the ref lands in reports and provenance, read later from elsewhere
        return PatchSource(str(adapter_dir.resolve()), adapter_dir, manifest, None)
    if isinstance(ref, (HubRef, RemoteRef)):
        version = pull(settings, text, progress=progress).version
    else:
        assert isinstance(ref, PatchRef)
        with catalog(settings) as cat:
            resolved = cat.resolve(ref)
        version = resolved.version
        if version.yanked:
            log.warning("%s is yanked%s", version.ref, f": {version.yank_reason}" if version.yank_reason else "")
    return PatchSource(version.ref, _materialized(settings, version), version.manifest, version)


def _materialized(settings: Settings, version: VersionInfo) -> Path:
    """The version as a PEFT adapter directory, kept at ``<home>/adapters/<content digest>``
    (hard links to the read-only store files) so the path recorded in an install's
    ``patchctl.json`` stays valid. Laid out in a temporary sibling and renamed into place."""
    from patchctl.registry.blobs import BlobStore, layout_problems

    dest = settings.home / "adapters" / version.content_digest
    wanted = ((MANIFEST_FILE, version.manifest_sha256),)
    # every file is verified by sha256 before it is used (patches are small next to a merge):
    # a damaged layout is rebuilt from the store; a damaged store blob is an IntegrityError
    damaged = layout_problems(dest, version.files, wanted) if dest.exists() else []
    if dest.exists() and not damaged:
        return dest
    store = BlobStore(settings.store_dir)
    for f in (*version.files, FileEntry(path=MANIFEST_FILE, sha256=version.manifest_sha256, size=0)):
        try:
            store.verify(f.sha256)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{version.ref}: {f.path}: {exc}; nothing installed",
                hint="`patchctl verify` lists the damage; pull or push the version again to restore it",
            ) from None
    if damaged:
        log.warning("%s: rebuilding the damaged layout %s (%s)", version.ref, dest, "; ".join(damaged))
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_materializations(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_MATERIALIZE_PREFIX}{os.getpid()}-", dir=dest.parent))
    try:
        materialize_version(settings, version, tmp / "adapter")
        if damaged:  # move the damaged layout aside (a concurrent reader keeps its open files)
            with contextlib.suppress(FileNotFoundError):
                os.rename(dest, tmp / "damaged")
        try:
            os.rename(tmp / "adapter", dest)
        except OSError:  # another process laid it out first: same content digest, same files
            if problems := layout_problems(dest, version.files, wanted):
                # not a usable layout (another process caught mid-way, seen under concurrent
                # `ci` jobs sharing a home): ours, verified, replaces it
                log.warning("%s: replacing the layout %s (%s)", version.ref, dest, "; ".join(problems))
                with contextlib.suppress(FileNotFoundError):
                    os.rename(dest, tmp / "replaced")
                os.rename(tmp / "adapter", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _target_base(settings: Settings, text: str, *, progress: bool) -> TargetBase:
    ref = parse_base_ref(text)
    if isinstance(ref, HubRef):
        from patchctl.remotes import remote_base_facts

        return TargetBase(str(ref), remote_base_facts(ref), None, ref)
    return TargetBase(str(ref.path), read_base(ref.path, show_progress=progress, settings=settings), ref.path, None)


def _drift_source(settings: Settings, source: PatchSource, given: Path | None) -> Path:
    """The source base directory to measure drift from: ``given``, else the manifest's source path
    when it still exists; its weights must be the ones the patch was trained on."""
    if given is None:
        recorded = Path(source.manifest.source_base.repo) if source.manifest else None
        if recorded is None or not recorded.is_dir():
            raise InvalidInputError(
                "drift needs the source base's weights: the manifest's source is not a local directory here; "
                "pass --source-base DIR (the base the patch was trained on)"
            )
        given = recorded
    if source.manifest is not None:
        facts = read_base(given, settings=settings)
        if facts.weights_sha256 != source.manifest.source_base.weights_sha256:
            raise InvalidInputError(
                f"{given} is not the base {source.ref} was trained on "
                f"(weights {facts.weights_sha256[:12]}, patch.json says {source.manifest.source_base.weights_sha256[:12]})"
            )
    return given


def _run(
    settings: Settings, source: PatchSource, target: TargetBase, *, drift_from: Path | None = None, drift: bool = False
) -> CheckOutcome:
    from patchctl.checks import drift_report, read_adapter_for_checks, run_checks

    layout = read_adapter_for_checks(source.adapter_dir)
    report_id = None
    with catalog(settings) as cat:
        ancestors = {a.base.weights_sha256 for a in cat.ancestors(target.facts.weights_sha256)}
        report = run_checks(
            layout, target.facts, manifest=source.manifest, target_ancestors=ancestors, patch=source.ref
        )
        if drift:
            if target.local_dir is None:
                raise InvalidInputError("drift needs the target base's weights locally (not an hf:// base)")
            extra = drift_report(layout, _drift_source(settings, source, drift_from), target.local_dir)
            report = report.model_copy(update={"results": (*report.results, extra)})
        if source.version is not None:
            from patchctl.evaluate._run import validated_check

            found = validated_check(cat, source.version, target.facts.weights_sha256)
            if found is not None:
                report = report.model_copy(update={"results": (*report.results, found)})
            rec = cat.record_compat_report(
                source.version.name,
                source.version.version,
                base_weights_sha256=target.facts.weights_sha256,
                status=report.status,
                report=report.model_dump(mode="json"),
                tool_version=__version__,
            )
            report_id = rec.id
    return CheckOutcome(report, report_id, source.ref, target.ref)


def _plan_summary(plan: MergePlan | None, source: PatchSource, max_memory: int | None = None) -> dict[str, Any] | None:
    """The plan as data, naming the patch by its ref rather than the directory it was laid out in,
    with what the memory budget means for it (deltas computed in row blocks)."""
    if plan is None:
        return None
    from patchctl.merge._blocks import DEFAULT_MAX_MEMORY, Blocking

    summary = plan.summary()
    summary["adapter"] = source.ref
    summary["memory"] = Blocking(max_memory or DEFAULT_MAX_MEMORY).summary(plan)
    return summary


@contextlib.contextmanager
def _arriving_base(target: TargetBase, progress: Any) -> Iterator[ArrivingBase]:
    """The Hub base at the commit that was checked (not wherever its branch points now), arriving
    in the HF cache shard by shard: only the weight files the checks saw (the shards an index
    names) and the small non-weight files are fetched; each shard is verified against the sha256
    the checks saw as it lands (a damaged one is removed from the HF cache and nothing is merged).
    ``progress`` (a RichMergeProgress or None) shows the download beside the merge."""
    from patchctl.remotes._bases import stream_base

    assert target.hub is not None and target.facts.revision is not None
    pinned = HubRef(target.hub.repo_id, revision=target.facts.revision)
    weights = sorted((f.path, f.sha256, f.size) for f in target.facts.weight_files)
    if progress is not None:
        progress.start_download(sum(size for _, _, size in weights), len(weights))
    arriving = stream_base(
        pinned,
        weights,
        on_bytes=progress.downloaded if progress is not None else None,
        on_file=progress.downloading if progress is not None else None,
        start=False,  # the weights only once the merge is planned (from the headers)
    )
    try:
        yield arriving
    finally:
        arriving.close()


def _download_checked_base(target: TargetBase, *, progress: bool) -> Path:
    """Download the whole Hub base at the commit that was checked (for ``validate``, which loads it
    whole; ``install`` merges it as it arrives instead, :func:`_arriving_base`) (not wherever its branch points now)
    and verify every weight file against the sha256 the checks saw; a damaged file is removed
    from the HF cache (a retry downloads it again) and nothing is merged."""
    from patchctl._fs import sha256_file
    from patchctl.remotes import download_base

    assert target.hub is not None and target.facts.revision is not None
    pinned = HubRef(target.hub.repo_id, revision=target.facts.revision)
    base_dir = download_base(pinned, progress=progress)
    bad = [f.path for f in target.facts.weight_files if sha256_file(base_dir / f.path) != f.sha256]
    if bad:
        for rel in bad:
            link = base_dir / rel
            if link.is_symlink():
                link.resolve().unlink(missing_ok=True)
            link.unlink(missing_ok=True)
        raise IntegrityError(
            f"{pinned}: sha256 mismatch after download ({', '.join(bad)}): not the bytes the Hub lists; nothing merged",
            hint="the damaged files were removed from the HF cache; retry, and report it to the repo owner if it recurs",
        )
    return base_dir


def _prepare_merge_in_background(
    base_dir: Path | None = None, cache_dir: Path | None = None, *, engine: bool = True
) -> None:
    """Start importing the merge engine (``engine``; torch: about a second) on another thread,
    and then building the dtype plan of a local base (transformers' modeling code: seconds,
    cached), so that both overlap with fingerprinting the base (hashlib releases the GIL). The
    later import and plan wait for them; an error surfaces there, as it would without this."""
    import importlib
    import threading

    def load() -> None:
        with contextlib.suppress(Exception):
            if engine:
                importlib.import_module("patchctl.merge._execute")
            if base_dir is not None:
                from patchctl.merge._fp32 import warm

                warm(base_dir, cache_dir)

    threading.Thread(target=load, name="patchctl-import-merge", daemon=True).start()


def check(
    settings: Settings,
    patch: str,
    *,
    onto: str,
    progress: bool = True,
    drift: bool = False,
    source_base: Path | None = None,
) -> CheckOutcome:
    """Run every compatibility check of ``patch`` against the base ``onto`` (a directory or hf://).

    ``drift`` adds the ``drift`` check (per-module ‖W′−W‖/‖W‖ and against ‖s·B·A‖), which reads
    both bases' weights: the source base is ``source_base`` or the manifest's source directory."""
    target = _target_base(settings, onto, progress=progress)
    source = _patch_source(settings, patch, progress=progress)
    return _run(settings, source, target, drift=drift or source_base is not None, drift_from=source_base)


def install(
    settings: Settings,
    patch: str,
    *,
    onto: str,
    out: Path | None,
    format: InstallFormat = "merged",
    force: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    on_report: Callable[[CompatReport], None] | None = None,
    max_memory: int | None = None,
    merge_worker: MergeWorker | None = None,
) -> InstallOutcome:
    """Check, then merge ``patch`` onto ``onto`` into ``out`` (or write a rebased adapter).

    ``force`` installs despite failed checks (recorded as forced); ``overwrite`` replaces an
    existing ``out`` — two separate decisions, so that re-running a script never skips checks.
    ``on_report`` is called with the compat report as soon as the checks have run (before a
    refusal or the merge), so that a caller can show it first. ``max_memory`` bounds the merge's
    peak RSS (default 512 MiB; LoRA deltas larger than the budget are computed in row blocks).
    ``merge_worker`` (started by the caller, closed by the caller): merge a local base in that
    child process (see :mod:`patchctl._mergeproc`), which has been importing torch meanwhile.
    """
    from patchctl.adapter import read_adapter
    from patchctl.merge import RichMergeProgress, plan_merge, write_rebased_adapter

    if format not in ("merged", "adapter"):
        raise InvalidInputError(f"--format {format!r}: expected 'merged' or 'adapter'")
    if out is None and not dry_run:
        raise UsageError("--out DIR is required (or use --dry-run)")
    if out is not None:
        out = Path(os.path.abspath(Path(out).expanduser()))
        if not dry_run and not overwrite and (out.exists() or out.is_symlink()):
            # fail before fingerprinting the base (minutes for a large one); the engine checks again
            raise ConflictError(f"{out} already exists", hint="pass --overwrite to replace it")
    base_ref = parse_base_ref(onto)
    # onto a Hub base, torch is imported once its download has started, not here: the import
    # holds the GIL for most of a second, which delayed the checks and so the download by 1.5 s
    if format == "merged" and not dry_run and isinstance(base_ref, PathRef):
        _prepare_merge_in_background(
            base_ref.path if base_ref.path.is_dir() else None,
            settings.dtype_plan_cache_dir,
            engine=merge_worker is None,
        )
    target = _target_base(settings, onto, progress=progress)
    patch, decision = _resolve_for_target(settings, patch, target)
    source = _patch_source(settings, patch, progress=progress)
    outcome = _run(settings, source, target)
    report = outcome.report
    if on_report is not None:
        on_report(report)
    # an adapter that is not plain LoRA (DoRA, an init that rewrites the base: PiSSA, OLoRA...) is
    # unsupported (exit 6, the fix in the message), with or without --force; the report is shown first
    layout = read_adapter(source.adapter_dir)
    if report.failed and not force:
        raise CheckFailedError(
            f"{report.summary()}; refusing to install",
            hint=f"`patchctl check {patch} --onto {onto}` shows every check; --force installs anyway (logged)",
            report=report,
        )
    if report.failed:
        log.warning("installing despite failed checks (--force): %s", ", ".join(r.name for r in report.failed))
    forced = bool(force and report.failed)
    provenance = {
        "patch": source.ref,
        "manifest_content_digest": source.manifest.content_digest if source.manifest else None,
        "compat_status": report.status,
        "compat_report_id": outcome.report_id,
        "forced": forced,
        "base_source": target.facts.source,
        "base_revision": target.facts.revision,
    }
    plan_cache = settings.dtype_plan_cache_dir
    plan = (
        plan_merge(layout, target.local_dir, cache_dir=plan_cache) if format == "merged" and target.local_dir else None
    )
    if dry_run:
        return InstallOutcome(
            outcome, format, out, True, forced, _plan_summary(plan, source, max_memory), None, None, decision
        )
    assert out is not None
    if format == "merged":
        from patchctl.merge._blocks import DEFAULT_MAX_MEMORY, Blocking

        merge_progress = RichMergeProgress(f"installing {source.ref}") if progress else None
        with contextlib.ExitStack() as stack:
            wait_for_shard = None
            if plan is None:  # a Hub base: downloaded only now that the checks passed, merged as it arrives
                arriving = stack.enter_context(_arriving_base(target, merge_progress))
                plan = dataclasses.replace(
                    plan_merge(layout, arriving.skeleton, cache_dir=plan_cache), base_dir=arriving.snapshot
                )
                arriving.start()
                wait_for_shard = arriving.wait
            options: dict[str, Any] = {
                "force": overwrite,
                "provenance": provenance,
                "base_weights_sha256": target.facts.weights_sha256,
                "blocking": Blocking(max_memory or DEFAULT_MAX_MEMORY),
            }
            merged = None
            if merge_worker is not None and wait_for_shard is None:
                log.info("merging in a child process (pid %d)", merge_worker.pid)
                merged = merge_worker.merge(plan, out, progress=merge_progress, **options)
            if merged is None:
                from patchctl.merge import execute_merge  # torch: only now

                merged = execute_merge(plan, out, progress=merge_progress, wait_for_shard=wait_for_shard, **options)
            result = merged
    else:
        result = write_rebased_adapter(
            layout,
            out,
            base_model_name_or_path=target.hub.repo_id if target.hub else target.facts.source,
            revision=target.facts.revision,
            force=overwrite,
            provenance=provenance,
        )
    install_id = None
    if source.version is not None:
        with catalog(settings) as cat:
            install_id = cat.record_install(
                source.version.name,
                source.version.version,
                base_weights_sha256=target.facts.weights_sha256,
                out_path=str(result.out_dir),
                format=format,
                forced=forced,
                report_id=outcome.report_id,
                decision=decision,
            ).id
    return InstallOutcome(
        outcome,
        format,
        result.out_dir,
        False,
        forced,
        _plan_summary(plan, source, max_memory),
        result.to_dict(),
        install_id,
        decision,
    )


def _resolve_for_target(settings: Settings, patch: str, target: TargetBase) -> tuple[str, dict[str, Any] | None]:
    """A catalog reference that is not an exact pin goes through the resolver for ``target``
    (:mod:`patchctl.resolving`, unrelated same-family versions allowed, ranked last, as the
    ``lineage`` check only warns about them): the chosen ``org/name==X`` and the decision to record.

    When no version fits, the newest matching one is taken as before, so its failed checks are
    shown and refused (exit 21) or installed with ``--force``; the decision records why."""
    from patchctl.registry.resolver import NoCompatibleVersionError
    from patchctl.registry.store import open_catalog
    from patchctl.resolving import ResolveTarget, needs_resolution, resolve_with_catalog

    if not needs_resolution(patch):
        return patch, None
    cat = open_catalog(settings)
    try:
        rt = ResolveTarget(target.facts.weights_sha256, target.facts, target.ref)
        try:
            res = resolve_with_catalog(settings, cat, patch, rt, allow_unrelated=True)
        except NoCompatibleVersionError as exc:
            ref = parse_patch_ref(patch)
            assert isinstance(ref, PatchRef)
            fallback = cat.resolve(ref).version.ref
            log.warning("no version of %s fits %s; trying %s (the newest matching)", patch, target.ref, fallback)
            return fallback, {**exc.resolution.to_dict(), "fallback": fallback}
    finally:
        cat.close()
    assert res.chosen is not None
    log.info("resolved %s for %s: %s", patch, target.ref, res.chosen)
    return res.chosen, res.to_dict()
