"""Our streaming merge equals PEFT's merge_and_unload bit for bit, per LoRA variant, base dtype and
the dtype the adapter was saved in."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mergeref import DIVERGES_FROM_MERGE_AND_UNLOAD, DTYPES, VARIANTS, Reference

from patchctl.adapter import read_adapter
from patchctl.merge import _execute, execute_merge, plan_merge

IDS = torch.tensor([[1, 5, 9, 23, 42, 7, 3, 77]])


@pytest.mark.parametrize("saved", list(DTYPES))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merge_equals_peft_merge_and_unload(
    variant: str,
    dtype: str,
    saved: str,
    make_typed_base: Callable[[str, str], Path],
    make_saved_adapter: Callable[..., Path],
    ref: type[Reference],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # touched tensors are streamed in row chunks: make them a few rows so that chunking is exercised
    monkeypatch.setattr(_execute, "ROW_CHUNK_BYTES", 300)
    kind, _ = VARIANTS[variant]
    base = make_typed_base(kind, dtype)
    adapter = make_saved_adapter(variant, saved)  # saved: the dtype the adapter's tensors were saved in
    plan = plan_merge(read_adapter(adapter), base)
    result = execute_merge(plan, tmp_path / "out", provenance={"patch": f"test/{variant}"})
    assert result.tensors_touched == plan.summary()["tensors_touched"] > 0

    ours = ref.load_dir_tensors(result.out_dir)
    # the reference: PEFT with the adapter saved with save_embedding_layers=False (copies of θ's
    # embedding/head that PEFT saves inside an adapter are never written: θ′ + Δθ and nothing of θ)
    reference = ref.peft_merged_state_dict(base, make_saved_adapter(variant, saved, clean=True), DTYPES[dtype])
    base_tensors = ref.load_dir_tensors(base)
    changed = 0
    for name in DIVERGES_FROM_MERGE_AND_UNLOAD.get(variant, ()):
        assert torch.equal(ours.pop(name), base_tensors[name]), name
        assert not torch.equal(reference[name], base_tensors[name]), name
    for name, tensor in ours.items():
        assert name in reference, f"{name} not in PEFT's merged state dict"
        assert tensor.dtype == reference[name].dtype == DTYPES[dtype], name
        assert torch.equal(tensor, reference[name]), f"{variant}/{dtype}: {name} differs from PEFT"
        changed += name in base_tensors and not torch.equal(tensor, base_tensors[name])
    assert changed > 0
    # every reference tensor we do not write is a tied alias of one we do write
    for name in set(reference) - set(ours):
        assert any(reference[name].data_ptr() == reference[o].data_ptr() for o in ours), f"{name} missing"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merged_dir_loads_and_matches_peft_logits(
    variant: str,
    make_typed_base: Callable[[str, str], Path],
    make_variant_adapter: Callable[[str], Path],
    ref: type[Reference],
    tmp_path: Path,
) -> None:
    kind, _ = VARIANTS[variant]
    base = make_typed_base(kind, "fp32")
    adapter = make_variant_adapter(variant)
    out = tmp_path / "merged"
    execute_merge(plan_merge(read_adapter(adapter), base), out, provenance={})
    merged = ref.model_logits(out, IDS)
    with_adapter = ref.peft_logits(base, adapter, IDS)
    plain = ref.model_logits(base, IDS)
    assert not torch.allclose(plain, with_adapter, atol=1e-4)  # the patch matters
    torch.testing.assert_close(merged, with_adapter, atol=2e-5, rtol=1e-4)
    config = json.loads((out / "config.json").read_text())
    if variant.startswith("tied_"):
        assert config["tie_word_embeddings"] is False
