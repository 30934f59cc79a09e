"""Shared helpers of the remote tests (imported as ``remotes.helpers``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hubserver import HubServer

import patchctl
from patchctl._fs import sha256_file
from patchctl.adapter import read_adapter
from patchctl.bases import read_local_base
from patchctl.remotes import Remote
from patchctl.schemas import FileEntry, Manifest, SourceBase
from patchctl.schemas.peft_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS

PATCH_NAME = "acme/sst2-lora"
SECRET = "hf_" + "S3cr3tT0kenValue" * 2


def make_manifest(
    adapter_dir: Path,
    base_dir: Path,
    *,
    version: str = "1.0.0",
    name: str = PATCH_NAME,
    base_repo: str = "acme/pico-llama",
    task: str = "sst2",
) -> Manifest:
    """A manifest as ``patchctl push`` would write it (built here from the real readers)."""
    facts = read_local_base(base_dir)
    layout = read_adapter(adapter_dir)
    files = tuple(
        FileEntry(path=p, sha256=sha256_file(adapter_dir / p), size=(adapter_dir / p).stat().st_size)
        for p in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
    )
    return Manifest(
        name=name,
        version=version,
        task=task,
        description="Sentiment LoRA for the pico Llama.",
        license="apache-2.0",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        patchctl_version=patchctl.__version__,
        lora=layout.lora_spec(),
        source_base=SourceBase(
            repo=base_repo,
            revision="0" * 40,
            weights_sha256=facts.weights_sha256,
            structure_sha256=facts.structure_sha256,
            family=facts.family,
            tokenizer_sha256=facts.tokenizer_sha256,
        ),
        files=files,
    )


@dataclass
class Harness:
    """One remote under test, plus what a test needs to look behind it."""

    kind: str
    remote: Remote
    hub: HubServer | None = None
    root: Path | None = None

    @property
    def repo_id(self) -> str:
        return PATCH_NAME

    def corrupt(self, version: str, path: str) -> None:
        if self.hub is not None:
            self.hub.corrupt(self.repo_id, path, revision=f"v{version}")
        else:
            assert self.root is not None
            target = self.root / PATCH_NAME / "versions" / version / path
            target.chmod(0o644)
            data = bytearray(target.read_bytes())
            data[len(data) // 2] ^= 0xFF
            target.write_bytes(bytes(data))

    def state(self) -> Any:
        """Everything that a no-op publish must leave unchanged."""
        if self.hub is not None:
            if self.repo_id not in self.hub.repos:
                return None
            return self.hub.refs(self.repo_id), self.hub.commit_count(self.repo_id)
        assert self.root is not None
        return sorted(
            (str(p.relative_to(self.root)), p.stat().st_mtime_ns) for p in self.root.rglob("*") if p.is_file()
        )
