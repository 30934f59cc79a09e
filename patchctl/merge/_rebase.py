"""``--format adapter``: a rebased PEFT adapter directory for engines that load LoRA at run time."""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchctl.adapter import AdapterLayout
from patchctl.merge._copy import copy_file, copy_range
from patchctl.merge._output import PROVENANCE_FILE, MergeResult, atomic_output_dir, write_provenance
from patchctl.schemas.peft_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS

__all__ = ["write_rebased_adapter"]


def _write_without(src: Path, dst: Path, header: Mapping[str, Any], drop: set[str]) -> None:
    """``src`` (a safetensors file with ``header``) without the tensors in ``drop``; the others'
    bytes copied in the kernel, in order."""
    kept = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__" and k not in drop),
        key=lambda kv: int(kv[1]["data_offsets"][0]),
    )
    out_header: dict[str, Any] = {}
    if isinstance(header.get("__metadata__"), Mapping):
        out_header["__metadata__"] = dict(header["__metadata__"])
    end = 0
    for k, v in kept:
        n = int(v["data_offsets"][1]) - int(v["data_offsets"][0])
        out_header[k] = {"dtype": v["dtype"], "shape": list(v["shape"]), "data_offsets": [end, end + n]}
        end += n
    raw = json.dumps(out_header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        src_data = 8 + struct.unpack("<Q", fi.read(8))[0]
        fo.write(struct.pack("<Q", len(raw)) + raw)
        fo.flush()
        dst_data, at = 8 + len(raw), 0
        for _k, v in kept:
            start, stop = int(v["data_offsets"][0]), int(v["data_offsets"][1])
            copy_range(fi.fileno(), fo.fileno(), stop - start, src_data + start, dst_data + at)
            at += stop - start
        os.fsync(fo.fileno())


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

    The weights are not touched (the same Δθ, now declared for θ′), except that copies of θ's own
    embedding/head that PEFT saved in the adapter (``…base_layer.weight``) are left out: loaded onto
    θ′ they would replace its matrix with θ's (the install writes θ′ + Δθ and nothing of θ). Same
    atomic rules as a merge. Every other key of the config is kept as PEFT wrote it.
    """
    started = time.monotonic()
    out_dir = Path(out_dir).expanduser()
    with atomic_output_dir(out_dir, force=force, protect=(adapter.path,)) as tmp:
        for entry in sorted(adapter.path.iterdir()):
            if entry.name in (ADAPTER_CONFIG, PROVENANCE_FILE) or entry.name.startswith(".") or not entry.is_file():
                continue
            if entry.name == ADAPTER_WEIGHTS and adapter.carried_base_layers:
                _write_without(entry, tmp / entry.name, adapter.header, {r.key for r in adapter.carried_base_layers})
            else:
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
