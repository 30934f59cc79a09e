"""``dtype`` judges the tensors the patch touches, not every tensor of the base."""

from __future__ import annotations

from pathlib import Path

import torch


def test_integer_buffer_elsewhere_passes(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path):
    """An int64 ``position_ids`` buffer and an int8 weight the patch does not touch are copied as
    they are; main refused any non-float ``.weight`` in the base."""

    def add(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t["model.position_ids"] = torch.arange(64, dtype=torch.int64)[None]
        t["model.layers.1.mlp.up_proj.weight"] = t["model.layers.1.mlp.up_proj.weight"].to(torch.int8)
        return t

    base = edit_dir(pico_llama, tmp_path / "intbuf", tensors=add)
    result = check(llama_adapter, base, source=pico_llama).result("dtype")
    assert result.status == "pass", result.detail
    assert "2 non-float tensors elsewhere are untouched" in result.detail
    assert result.data["target_dtypes"] == {"F32": 4}


def test_fp8_target_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    def cast(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t["model.layers.1.self_attn.v_proj.weight"] = t["model.layers.1.self_attn.v_proj.weight"].to(
            torch.float8_e4m3fn
        )
        t["model.layers.1.self_attn.v_proj.weight_scale"] = torch.ones(1)
        return t

    base = edit_dir(pico_llama, tmp_path / "fp8", tensors=cast)
    result = check(llama_adapter, base, source=pico_llama).result("dtype")
    assert result.status == "fail"
    assert "model.layers.1.self_attn.v_proj.weight (F8_E4M3)" in result.detail
    assert result.data["quantized_targets"] == 2  # the F8 weight and its module's scale
