"""Running the registered checks of a patch against a base into a :class:`CompatReport`."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timezone
from pathlib import Path

from patchctl import __version__
from patchctl.adapter import AdapterLayout, layout_from_header
from patchctl.bases import read_safetensors_header
from patchctl.checks._context import CHECKS, CheckContext
from patchctl.errors import AdapterError, InvalidInputError
from patchctl.schemas.base import BaseFacts
from patchctl.schemas.manifest import Manifest
from patchctl.schemas.peft_config import ADAPTER_WEIGHTS, read_adapter_config
from patchctl.schemas.report import CompatReport

__all__ = ["read_adapter_for_checks", "run_checks"]


def read_adapter_for_checks(adapter_dir: Path) -> AdapterLayout:
    """Like :func:`patchctl.adapter.read_adapter`, but an unsupported adapter (DoRA, a non-LoRA
    PEFT type, pickle-only weights) is returned so that the ``format`` check can report why,
    instead of raising. Unreadable input still raises :class:`AdapterError`."""
    adapter_dir = Path(adapter_dir).expanduser()
    if not adapter_dir.is_dir():
        raise AdapterError(f"{adapter_dir}: adapter directory does not exist")
    config = read_adapter_config(adapter_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        if (adapter_dir / "adapter_model.bin").is_file():
            problem = "adapter_model.bin is a pickle file: patchctl accepts safetensors adapters only"
            return AdapterLayout(adapter_dir, config, {}, (), (), (problem,))
        raise AdapterError(f"{adapter_dir}: no {ADAPTER_WEIGHTS}")
    try:
        header = read_safetensors_header(weights)
    except (InvalidInputError, OSError) as exc:
        raise AdapterError(str(exc) if str(weights) in str(exc) else f"{weights}: {exc}") from None
    return layout_from_header(adapter_dir, config, header)


def run_checks(
    adapter: AdapterLayout,
    base: BaseFacts,
    *,
    manifest: Manifest | None = None,
    target_ancestors: Collection[str] = (),
    patch: str = "",
    only: Iterable[str] | None = None,
) -> CompatReport:
    """Run every registered check (or those named in ``only``) of ``adapter`` against ``base``.

    ``manifest`` gives the source base facts; without one (a raw adapter directory) the checks
    that compare with the source warn. ``target_ancestors`` are the weights fingerprints of the
    target base's recorded ancestors. ``patch`` names the patch in the report (default: the
    manifest's ``name@version``, else the adapter path).
    """
    names = list(CHECKS) if only is None else list(only)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise InvalidInputError(f"unknown check(s): {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    ctx = CheckContext(adapter=adapter, base=base, manifest=manifest, target_ancestors=frozenset(target_ancestors))
    results = tuple(CHECKS[name](ctx) for name in names)
    if not patch:
        patch = f"{manifest.name}@{manifest.version}" if manifest is not None else str(adapter.path)
    return CompatReport(
        patch=patch,
        manifest_digest=manifest.content_digest if manifest is not None else None,
        base_source=base.source,
        base_revision=base.revision,
        base_weights_sha256=base.weights_sha256,
        results=results,
        tool_version=__version__,
        created_at=datetime.now(timezone.utc),
    )
