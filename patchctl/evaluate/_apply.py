"""A patch applied to a loaded base model in memory, with the merge engine's arithmetic, and removed.

The merged values come from the merge engine itself (:func:`patchctl.merge.plan_merge` and
:func:`patchctl.merge.execute_merge`), run on a *reduced base*: a temporary directory holding
only the tensors the patch touches (their bytes copied from the base files) and the base's
``config.json``. The plan on the reduced base must make exactly the changes the plan on the
full base makes (checked), so the tensors it writes are, bit for bit, the tensors ``install``
writes; they are copied into the model's parameters, and the originals are kept to restore
the model exactly when the patch is removed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchctl.errors import UnsupportedError

if TYPE_CHECKING:
    import torch

    from patchctl.merge import MergePlan

__all__ = ["applied_patch", "merged_tensors"]


def _changes(plan: MergePlan) -> dict[str, tuple[str, ...]]:
    return {t.name: tuple(a.describe() for a in t.actions) for s in plan.shards for t in s.tensors if t.touched}


def merged_tensors(adapter_dir: Path, base_dir: Path, *, base_weights_sha256: str | None = None) -> dict[str, Any]:
    """The tensors ``install`` would write for the ones the patch changes: name → tensor (CPU)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from patchctl.adapter import read_adapter
    from patchctl.merge import execute_merge, plan_merge

    layout = read_adapter(adapter_dir)
    full = plan_merge(layout, base_dir)
    if full.config_changes:
        raise UnsupportedError(
            f"{adapter_dir}: the patch changes the base's config ({', '.join(full.config_changes)}: an untied "
            "lm_head); validating it in memory is not supported",
            hint="install it and evaluate the installed directory with lm_eval",
        )
    wanted = _changes(full)
    sources = {a.source for s in full.shards for t in s.tensors for a in t.actions if a.source}
    needed = set(wanted) | sources
    with tempfile.TemporaryDirectory(prefix="patchctl-apply-") as tmp:
        reduced = Path(tmp) / "base"
        reduced.mkdir()
        shutil.copyfile(base_dir / "config.json", reduced / "config.json")
        tensors: dict[str, Any] = {}
        for shard in full.shards:
            names = [t.name for t in shard.tensors if t.name in needed and t.src_offsets is not None]
            if names:
                with safe_open(str(base_dir / shard.file), framework="pt") as f:
                    for n in names:
                        tensors[n] = f.get_tensor(n)
        save_file(tensors, str(reduced / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        small = plan_merge(layout, reduced)
        if _changes(small) != wanted or small.config_changes != full.config_changes:
            raise UnsupportedError(f"{adapter_dir}: the in-memory merge plan differs from the install plan; refusing")
        out = Path(tmp) / "merged"
        execute_merge(
            small,
            out,
            provenance={"purpose": "in-memory validation"},
            base_weights_sha256=base_weights_sha256 or "0" * 64,
        )
        merged = load_file(str(out / "model.safetensors"))
    return {n: merged[n] for n in wanted}


def _parameters(model: Any) -> dict[str, torch.Tensor]:
    params: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    params.update(dict(model.named_buffers(remove_duplicate=False)))
    return params


@contextmanager
def applied_patch(model: Any, merged: dict[str, Any]) -> Iterator[None]:
    """Within the block, ``model``'s tensors named in ``merged`` hold the merged values; on exit
    (even on error) the original values are copied back, bit for bit."""
    import torch

    params = _parameters(model)
    missing = [n for n in merged if n not in params]
    if missing:
        raise UnsupportedError(
            f"the loaded model has no tensor {missing[0]} (transformers renamed it?); cannot apply the patch in memory"
        )
    for n, t in merged.items():
        p = params[n]
        if tuple(p.shape) != tuple(t.shape) or p.dtype != t.dtype:
            raise UnsupportedError(
                f"{n}: the loaded model holds {p.dtype} {list(p.shape)}, the merge wrote {t.dtype} {list(t.shape)}"
            )
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for n, t in merged.items():
                saved[n] = params[n].detach().clone()
                params[n].copy_(t.to(params[n].device))
        yield
    finally:
        with torch.no_grad():
            for n, orig in saved.items():
                params[n].copy_(orig)


def state_checksum(model: Any) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (tests: restore is exact)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(_parameters(model).items()):
        c = t.detach().cpu().contiguous()
        h.update(json.dumps([name, str(c.dtype), list(c.shape)]).encode())
        h.update(c.view(-1).view(__import__("torch").uint8).numpy().tobytes() if c.numel() else b"")
    return h.hexdigest()
