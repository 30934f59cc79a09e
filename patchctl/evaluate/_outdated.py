"""``outdated``: patches not yet validated on the newest commit of the Hub bases they belong to (no torch).

A base belongs to a patch when the patch was made on it (its source base is a recorded
``hf://`` base) or validated on it (a validation's base ref names ``hf://repo[@branch]``). For
each such repo and branch (``main`` when only commits were recorded), the Hub is asked for the
branch's head (metadata only: the fingerprint comes from the LFS sha256s), and every patch
whose newest non-yanked version has no validation on that exact fingerprint is listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from patchctl._session import catalog
from patchctl.schemas.refs import HubRef, PatchRef, parse_base_ref
from patchctl.settings import Settings

__all__ = ["OutdatedPatch", "outdated"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class OutdatedPatch:
    patch: str
    base: str  # hf://repo@branch
    commit: str | None  # the branch's newest commit
    weights_sha256: str
    #: the newest base ref this version was validated on for this repo (None: never)
    last_validated: str | None


def _repo_branch(text: str) -> tuple[str, str] | None:
    try:
        ref = parse_base_ref(text)
    except ValueError:
        return None
    if not isinstance(ref, HubRef):
        return None
    rev = ref.revision or "main"
    return ref.repo_id, ("main" if _COMMIT.fullmatch(rev) else rev)


def outdated(settings: Settings) -> list[OutdatedPatch]:
    from patchctl.remotes import remote_base_facts

    with catalog(settings) as cat:
        bases = {b.weights_sha256: b for b in cat.list_bases()}
        validations = cat.list_all_validations()
        # (repo, branch) -> patch names that belong to it
        wanted: dict[tuple[str, str], set[str]] = {}
        last: dict[tuple[str, str], str] = {}  # (name==version, repo) -> newest base ref validated
        for v in validations:
            key = _repo_branch(v.base_ref) if v.base_ref else None
            if key is None and v.base_weights_sha256 in bases:
                key = _repo_branch(bases[v.base_weights_sha256].source)
            if key is not None:
                wanted.setdefault(key, set()).add(v.name)
                last[(f"{v.name}=={v.version}", key[0])] = v.base_ref or key[0]
        latest = {}
        for summary in cat.list_patches():
            if summary.latest is None:
                continue
            version = cat.resolve(PatchRef(summary.name)).version
            latest[summary.name] = version
            src = bases.get(version.manifest.source_base.weights_sha256)
            key = _repo_branch(src.source) if src is not None else _repo_branch(version.manifest.source_base.repo)
            if key is not None:
                wanted.setdefault(key, set()).add(summary.name)
        out: list[OutdatedPatch] = []
        for (repo, branch), names in sorted(wanted.items()):
            facts = remote_base_facts(HubRef(repo, revision=branch))
            for name in sorted(names):
                newest = latest.get(name)
                if newest is None:
                    continue
                done = cat.list_validations(name, newest.version, base_weights_sha256=facts.weights_sha256)
                if done:
                    continue
                out.append(
                    OutdatedPatch(
                        newest.ref,
                        f"hf://{repo}@{branch}",
                        facts.revision,
                        facts.weights_sha256,
                        last.get((newest.ref, repo)),
                    )
                )
    return out
