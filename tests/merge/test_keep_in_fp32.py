"""Modules the model class keeps in fp32 (``_keep_in_fp32_modules``: T5's ``wo``) are merged and
written as PEFT does: transformers loads a fp16 T5 with ``wo`` upcast to fp32, PEFT merges in fp32,
``save_pretrained`` writes fp32. (A bf16 load keeps ``wo`` in bf16: the non-strict list is fp16 only.)"""

from __future__ import annotations

from pathlib import Path

import picozoo
import pytest
import torch
from mergeref import DTYPES, Reference
from safetensors import safe_open

from patchctl.adapter import read_adapter
from patchctl.merge import execute_merge, plan_merge

WO = "encoder.block.0.layer.1.DenseReluDense.wo.weight"


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("t5")
    bases = {d: picozoo.make_base(root / f"t5-{d}", "t5", dtype=DTYPES[d]) for d in DTYPES}
    bases["adapter"] = picozoo.make_adapter(bases["fp32"], root / "ad", "t5", target_modules=["q", "v", "wo"])
    return bases


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_t5_wo_merged_and_written_as_peft_does(dtype: str, t5: dict[str, Path], tmp_path: Path) -> None:
    base, adapter = t5[dtype], t5["adapter"]
    plan = plan_merge(read_adapter(adapter), base)
    out = execute_merge(plan, tmp_path / "out", provenance={}).out_dir
    ours = Reference.load_dir_tensors(out)
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(base, dtype=DTYPES[dtype])
    reference = dict(PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict())
    want_wo = torch.float32 if dtype in ("fp16", "fp32") else torch.bfloat16
    assert reference[WO].dtype == want_wo  # what transformers + PEFT do
    assert ours[WO].dtype == want_wo
    for name, tensor in ours.items():
        assert tensor.dtype == reference[name].dtype, name
        assert torch.equal(tensor, reference[name]), f"{dtype}: {name} differs from PEFT"
    # the file is a valid safetensors file whose offsets shifted after each widened tensor
    with safe_open(out / "model.safetensors", "pt") as f:
        assert set(f.keys()) == set(Reference.load_dir_tensors(base))
    if dtype == "fp16":
        assert any("fp32" in n for n in plan.notes)
        reloaded = AutoModelForSeq2SeqLM.from_pretrained(out, dtype=torch.float16)
        assert reloaded.get_parameter(WO).dtype == torch.float32


def test_dtype_plan_is_cached_by_transformers_version_dtype_and_config(
    t5: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan costs seconds (transformers' modeling code): kept in the process and on disk, keyed by
    what it depends on; a cached answer is the computed one, and another config is computed anew."""
    import json

    from patchctl.merge import _fp32

    base, cache = t5["fp16"], tmp_path / "plans"
    config = json.loads((base / "config.json").read_text())
    monkeypatch.setattr(_fp32, "_memo", {})
    computed = _fp32.fp32_patterns(base, config, "F16", cache_dir=cache)
    assert computed[1] is None and any("wo" in p for p in computed[0])
    assert len(list(cache.glob("*.json"))) == 1

    def refuse(*args: object) -> object:
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(_fp32, "_memo", {})  # a new process: only the disk cache
    monkeypatch.setattr(_fp32, "_compute", refuse)
    assert _fp32.fp32_patterns(base, config, "F16", cache_dir=cache) == computed
    with pytest.raises(AssertionError, match="computed again"):  # the bf16 plan is another answer
        _fp32.fp32_patterns(base, config, "BF16", cache_dir=cache)
    with pytest.raises(AssertionError, match="computed again"):  # so is another config's
        _fp32.fp32_patterns(base, {**config, "d_ff": config["d_ff"] * 2}, "F16", cache_dir=cache)
    (next(cache.glob("*.json"))).write_text("{not json")  # a damaged entry is computed again, not trusted
    monkeypatch.setattr(_fp32, "_memo", {})
    with pytest.raises(AssertionError, match="computed again"):
        _fp32.fp32_patterns(base, config, "F16", cache_dir=cache)


def test_warm_fills_the_cache_plan_merge_reads(
    t5: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """install's background warm-up computes the plan plan_merge then uses (same key)."""
    from patchctl.merge import _fp32

    monkeypatch.setattr(_fp32, "_memo", {})
    _fp32.warm(t5["fp16"], tmp_path / "plans")
    assert len(list((tmp_path / "plans").glob("*.json"))) == 1

    def refuse(*args: object) -> object:
        raise AssertionError("computed again")

    monkeypatch.setattr(_fp32, "_compute", refuse)
    plan = plan_merge(read_adapter(t5["adapter"]), t5["fp16"], cache_dir=tmp_path / "plans")
    assert any("fp32" in n for n in plan.notes)
