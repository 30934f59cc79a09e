"""``--format adapter``: a rebased PEFT adapter directory for engines that load LoRA at run time."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchctl.adapter import AdapterLayout
from patchctl.merge._copy import copy_file
from patchctl.merge._output import PROVENANCE_FILE, MergeResult, atomic_output_dir, write_provenance
from patchctl.schemas.peft_config import ADAPTER_CONFIG

__all__ = ["write_rebased_adapter"]


def write_rebased_adapter(
    adapter: AdapterLayout,
    out_dir: Path,
    *,
    base_model_name_or_path: str,
    revision: str | None,
    force: bool = False,
    provenance: Mapping[str, Any],
) -> MergeResult:
    """Copy the adapter's files to ``out_dir`` with ``adapter_config.json`` naming the new base.

    The weights are not touched (the same Δθ, now declared for θ′). Same atomic rules as a merge.
    Every other key of the config is kept as PEFT wrote it.
    """
    started = time.monotonic()
    out_dir = Path(out_dir).expanduser()
    with atomic_output_dir(out_dir, force=force, protect=(adapter.path,)) as tmp:
        for entry in sorted(adapter.path.iterdir()):
            if entry.name in (ADAPTER_CONFIG, PROVENANCE_FILE) or entry.name.startswith(".") or not entry.is_file():
                continue
            copy_file(entry, tmp / entry.name)
        config = dict(adapter.config.raw)
        config["base_model_name_or_path"] = base_model_name_or_path
        config["revision"] = revision
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        files, doc = write_provenance(
            tmp,
            kind="adapter",
            provenance=provenance,
            extra={
                "base": {"name_or_path": base_model_name_or_path, "revision": revision},
                "adapter": {"path": str(adapter.path.resolve()), "lora": adapter.lora_spec().model_dump(mode="json")},
            },
        )
    return MergeResult(
        out_dir=Path(os.path.abspath(out_dir)),
        format="adapter",
        files=files,
        bytes_written=sum(f.size for f in files),
        seconds=time.monotonic() - started,
        provenance=doc,
    )
