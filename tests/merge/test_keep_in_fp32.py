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
