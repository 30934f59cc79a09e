"""One layout rule (transpose or not), decided from the base and used by the ``shapes`` check and
the merge alike; the adapter's ``fan_in_fan_out`` flag is compared with it, never trusted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import picomodels
import pytest
import torch
from mergeref import Reference

from patchctl.adapter import CONV1D_MODULES, read_adapter, stored_transposed
from patchctl.bases import read_local_base
from patchctl.checks import run_checks
from patchctl.merge import execute_merge, plan_merge

IDS = torch.tensor([[1, 5, 9, 23, 42, 7, 3, 77]])


def test_conv1d_table_matches_the_installed_transformers() -> None:
    """Every ``self.<name> = Conv1D(`` in transformers' modeling files is in CONV1D_MODULES under each
    model_type of that model folder, and those names are never an nn.Linear in the same file."""
    import transformers

    models = Path(transformers.__file__).parent / "models"
    found: dict[str, set[str]] = {}
    for modeling in models.glob("*/modeling_*.py"):
        text = modeling.read_text(encoding="utf-8")
        names = set(re.findall(r"self\.(\w+) = Conv1D\(", text))
        if not names:
            continue
        for name in names:
            assert not re.search(rf"self\.{name} = nn\.Linear\(", text), f"{modeling}: {name} is Linear too"
        config = modeling.parent / modeling.name.replace("modeling_", "configuration_")
        for model_type in re.findall(r'model_type = "([^"]+)"', config.read_text(encoding="utf-8")):
            found.setdefault(model_type, set()).update(names)
    assert found, "transformers has no Conv1D models any more? revisit the layout rule"
    assert {k: set(v) for k, v in CONV1D_MODULES.items()} == found


def test_layout_comes_from_the_base_not_the_flag() -> None:
    assert stored_transposed("gpt2", "transformer.h.0.attn.c_attn.weight")
    assert stored_transposed("gpt2", "transformer.h.0.attn.c_proj.weight")  # square: only the base can tell
    assert not stored_transposed("gpt2", "lm_head.weight")
    assert not stored_transposed("gpt2", "transformer.wte.weight", "embedding")
    assert not stored_transposed("llama", "model.layers.0.self_attn.q_proj.weight")
    assert not stored_transposed("mistral", "model.layers.0.mlp.c_proj.weight")  # a Linear named like GPT-2's


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_gpt2_c_attn_and_lm_head_check_and_merge_exactly(dtype: str, tmp_path: Path) -> None:
    """PEFT saves fan_in_fan_out=false for c_attn (Conv1D) + lm_head (Linear): the check passes (the
    flag is noted) and the merge equals merge_and_unload (untied GPT-2, so the reference is PEFT's own)."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    theta = picomodels.make_base(tmp_path / "gpt2", "gpt2", tie=False)
    typed = picomodels.make_base(tmp_path / f"gpt2-{dtype}", "gpt2", tie=False, dtype=torch_dtype)
    adapter = picomodels.make_adapter(theta, tmp_path / "ad", target_modules=["c_attn", "c_proj", "lm_head"])
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is False

    layout = read_adapter(adapter)
    shapes = run_checks(layout, read_local_base(typed), only=["shapes"]).results[0]
    assert shapes.status == "pass", shapes.detail
    assert "fan_in_fan_out=false but the base stores" in shapes.detail
    out = execute_merge(plan_merge(layout, typed), tmp_path / "out", provenance={}).out_dir
    ours = Reference.load_dir_tensors(out)
    reference = Reference.peft_merged_state_dict(typed, adapter, torch_dtype)
    for name, tensor in ours.items():
        assert torch.equal(tensor, reference[name]), name
    if dtype == "fp32":
        torch.testing.assert_close(
            Reference.model_logits(out, IDS), Reference.peft_logits(theta, adapter, IDS), atol=2e-5, rtol=1e-4
        )


def test_square_conv1d_of_a_type_the_rule_knows_is_transposed_whatever_the_flag(
    pico_gpt2: Path, tmp_path: Path
) -> None:
    """GPT-2's attention c_proj is square [32, 32]: only the rule can say it is (in, out). The merge
    follows the rule, whatever the flag says; a model type missing from the table would be merged as a
    Linear, hence the table test above."""
    adapter = picomodels.make_adapter(pico_gpt2, tmp_path / "ad", target_modules=["c_proj"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["fan_in_fan_out"] = False  # a hand-edited flag: ignored
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    out = execute_merge(plan_merge(read_adapter(adapter), pico_gpt2), tmp_path / "out", provenance={}).out_dir
    reference = Reference.peft_merged_state_dict(pico_gpt2, adapter, torch.float32)
    for name, tensor in Reference.load_dir_tensors(out).items():
        assert torch.equal(tensor, reference[name]), name
