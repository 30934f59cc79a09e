"""``patchctl lineage REF|BASE``: the bases around a patch or a base, what was made and checked on each."""

from __future__ import annotations

import re
from pathlib import Path

from patchctl.errors import InvalidInputError, NotFoundError
from patchctl.registry.records import LineageGraph
from patchctl.registry.store import open_catalog
from patchctl.schemas.refs import HubRef, PatchRef, parse_base_ref, parse_patch_ref
from patchctl.settings import Settings

__all__ = ["lineage"]

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{8,64}")


def lineage(settings: Settings, text: str, *, per_base_limit: int = 20, progress: bool = False) -> LineageGraph:
    """The lineage graph around ``text``: a catalog patch (``org/name``: every version, on its source
    base), or a base (weights fingerprint, ``hf://repo[@rev]`` recorded in the catalog, or a local
    directory, fingerprinted)."""
    cat = open_catalog(settings)
    try:
        if _FINGERPRINT.fullmatch(text) and not Path(text).exists():
            return cat.lineage_graph(base=text, per_base_limit=per_base_limit)
        if text.startswith("hf://"):
            hub = parse_base_ref(text)
            assert isinstance(hub, HubRef)
            found = cat.find_bases(f"hf://{hub.repo_id}", hub.revision)
            if not found:
                raise NotFoundError(f"{text}: no such base in the catalog", hint="see `patchctl base list`")
            return cat.lineage_graph(base=found[-1].weights_sha256, per_base_limit=per_base_limit)
        if Path(text).expanduser().is_dir():
            from patchctl.installer import _target_base

            facts = _target_base(settings, text, progress=progress).facts
            return cat.lineage_graph(base=facts.weights_sha256, per_base_limit=per_base_limit)
        ref = parse_patch_ref(text)
        if not isinstance(ref, PatchRef):
            raise InvalidInputError(f"{text!r}: expected org/name, a base directory, hf://repo@rev or a fingerprint")
        return cat.lineage_graph(name=ref.name, per_base_limit=per_base_limit)
    finally:
        cat.close()
