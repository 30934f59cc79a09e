"""``push``: record a PEFT LoRA adapter as a version of a patch.

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
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from patchctl import __version__
from patchctl._fs import sha256_file
from patchctl._session import PublishedCopy, Publisher, catalog, checked_adapter, content_store, read_base
from patchctl._text import check_text
from patchctl.errors import AdapterError, InvalidInputError, NotFoundError
from patchctl.registry.blobs import BlobStore, materialize
from patchctl.registry.records import RemoteCopy, VersionInfo
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
from patchctl.settings import Settings

__all__ = ["EvalOptions", "PreparedPush", "PushResult", "prepare_push", "push"]

#: files of a patch version, in the order they are staged
PATCH_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)


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
    store = content_store(settings)
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
