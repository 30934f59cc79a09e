"""``patchctl lineage REF|BASE``: the bases around a patch or a base, what was made and checked on each."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchctl.errors import InvalidInputError, NotFoundError
from patchctl.registry.reads import CatalogReader, open_reader
from patchctl.registry.records import BaseInfo, LineageEdge, LineageGraph
from patchctl.schemas.refs import HubRef, PatchRef, parse_base_ref, parse_patch_ref
from patchctl.settings import Settings

__all__ = ["HubBaseAdded", "HubLineage", "add_hub_base", "hub_lineage", "lineage"]

log = logging.getLogger(__name__)

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{8,64}")


def lineage(settings: Settings, text: str, *, per_base_limit: int = 20, progress: bool = False) -> LineageGraph:
    """The lineage graph around ``text``: a catalog patch (``org/name``: every version, on its source
    base), or a base (weights fingerprint, ``hf://repo[@rev]`` recorded in the catalog, or a local
    directory, fingerprinted). Reads only (:func:`~patchctl.registry.reads.open_reader`)."""
    cat = open_reader(settings)
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


#: a Hub model card's ``base_model_relation`` → the catalog's lineage relation
_CARD_RELATIONS = {"finetune": "finetune", "merge": "merge", "quantized": "quantization", "adapter": "other"}


@dataclass(frozen=True)
class HubLineage:
    """What a Hub repo says about where a base comes from."""

    commit: str
    #: ``base_model`` of the model card (repo ids) and its ``base_model_relation``
    base_models: tuple[str, ...]
    relation: str | None
    #: earlier commits of the same history, newest first (the commit itself excluded)
    earlier_commits: tuple[str, ...]


def hub_lineage(ref: HubRef, *, token: str | None = None, endpoint: str | None = None) -> HubLineage:
    """The model card's ``base_model``/``base_model_relation`` and the commit history of ``ref``."""
    from huggingface_hub import HfApi

    from patchctl.remotes._hf import hf_endpoint, hub_errors, resolve_token

    ep, tok = hf_endpoint(endpoint), resolve_token(token)
    api = HfApi(endpoint=ep, token=tok or False, library_name="patchctl")
    what = f"hf://{ref.repo_id}@{ref.revision or 'main'}"
    with hub_errors(f"{what}: repo info", ep, tok):
        info = api.model_info(ref.repo_id, revision=ref.revision or "main")
    commit = str(info.sha)
    card: dict[str, Any] = info.card_data.to_dict() if info.card_data is not None else {}  # type: ignore[no-untyped-call]
    raw = card.get("base_model")
    bases = (raw,) if isinstance(raw, str) else tuple(str(b) for b in raw or () if isinstance(b, str))
    relation = card.get("base_model_relation")
    with hub_errors(f"{what}: commit history", ep, tok):
        history = [c.commit_id for c in api.list_repo_commits(ref.repo_id, revision=commit)]
    earlier = tuple(history[history.index(commit) + 1 :] if commit in history else history[1:])
    return HubLineage(commit, bases, relation if isinstance(relation, str) else None, earlier)


@dataclass(frozen=True)
class HubBaseAdded:
    base: BaseInfo
    created: bool
    edges: tuple[LineageEdge, ...]


def add_hub_base(
    settings: Settings, text: str, *, parents: Sequence[str] = (), relation: str = "update"
) -> HubBaseAdded:
    """Record a Hub base (facts from metadata and header range reads, no weights downloaded) with
    its lineage: edges to ``parents`` (fingerprints or ``hf://`` bases in the catalog), to the
    bases its model card names (``base_model``, relation from ``base_model_relation``) and to the
    nearest earlier commit of the same history that is in the catalog (``update``)."""
    from patchctl.remotes import remote_base_facts

    ref = parse_base_ref(text)
    if not isinstance(ref, HubRef):
        raise InvalidInputError(f"{text!r}: expected hf://org/repo[@rev]")
    facts = remote_base_facts(ref)
    hints = hub_lineage(HubRef(ref.repo_id, revision=facts.revision))
    from patchctl.registry.store import open_catalog

    cat = open_catalog(settings)
    try:
        wanted: list[tuple[str, str]] = [(_recorded(cat, p), relation) for p in parents]
        for repo in hints.base_models:
            found = cat.find_bases(f"hf://{repo}")
            if found:  # the most recently recorded revision of the repo the card names
                wanted.append((found[-1].weights_sha256, _CARD_RELATIONS.get(hints.relation or "", "other")))
            else:
                log.info("%s: model card names %s, which is not in the catalog", text, repo)
        for commit in hints.earlier_commits:
            found = cat.find_bases(f"hf://{ref.repo_id}", commit)
            if found:
                wanted.append((found[0].weights_sha256, "update"))
                break
        base, created = cat.add_base(facts)
        edges = []
        for parent, rel in dict(wanted).items():
            if parent == base.weights_sha256:
                continue  # the same weights at another commit
            try:
                edges.append(cat.add_lineage(base.weights_sha256, parent, rel))
            except InvalidInputError as exc:  # a cycle: keep what is recorded
                log.warning("%s: lineage edge to %s not recorded: %s", text, parent[:12], exc.message)
        return HubBaseAdded(base, created, tuple(edges))
    finally:
        cat.close()


def _recorded(cat: CatalogReader, text: str) -> str:
    if _FINGERPRINT.fullmatch(text):
        return cat.get_base(text).weights_sha256
    ref = parse_base_ref(text)
    if isinstance(ref, HubRef):
        found = cat.find_bases(f"hf://{ref.repo_id}", ref.revision)
        if len(found) == 1 or (found and ref.revision is None):
            return found[-1].weights_sha256
        raise NotFoundError(f"{text}: {'no' if not found else 'more than one'} such base in the catalog")
    raise InvalidInputError(f"{text!r}: a Hub base's parent is a fingerprint or an hf:// base in the catalog")
