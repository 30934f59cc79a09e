"""``format``: every way an adapter can be malformed or unsupported fails it, with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from patchctl.adapter import read_adapter
from patchctl.checks import read_adapter_for_checks, read_tensor
from patchctl.errors import AdapterError, UnsupportedError

Q0 = "base_model.model.model.layers.0.self_attn.q_proj"


def _format(check, adapter: Path, base: Path):
    report = check(adapter, base, source=base)
    result = report.result("format")
    assert result.status == "fail", result.detail
    assert report.exit_code() == 21
    return result


def _set(key: str, fn):
    def edit(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t[key] = fn(t[key].clone())
        return t

    return edit


def test_nan_in_adapter_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    def nan(v: torch.Tensor) -> torch.Tensor:
        v[1, 2] = float("nan")
        v[0, 0] = float("inf")
        return v

    adapter = edit_dir(llama_adapter, tmp_path / "nan", tensors=_set(f"{Q0}.lora_B.weight", nan))
    result = _format(check, adapter, pico_llama)
    assert result.data["nonfinite"] == {f"{Q0}.lora_B.weight": 2}
    assert "2 NaN/inf values in 1 tensor" in result.detail


@pytest.mark.parametrize(("dtype", "name"), [(torch.bfloat16, "BF16"), (torch.float16, "F16")])
def test_nonfinite_half_precision_adapters_fail(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path, dtype: torch.dtype, name: str
) -> None:
    def to_half_with_inf(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t = {k: v.to(dtype) for k, v in t.items()}
        t[f"{Q0}.lora_A.weight"][3, 31] = float("-inf")
        return t

    adapter = edit_dir(llama_adapter, tmp_path / name, tensors=to_half_with_inf)
    result = _format(check, adapter, pico_llama)
    assert result.data["nonfinite"] == {f"{Q0}.lora_A.weight": 1}
    assert result.data["dtypes"] == [name]


def test_read_tensor_decodes_bf16_exactly(edit_dir, tmp_path: Path, llama_adapter: Path) -> None:
    adapter = edit_dir(llama_adapter, tmp_path / "bf16", tensors=lambda t: {k: v.bfloat16() for k, v in t.items()})
    layout = read_adapter_for_checks(adapter)
    key = f"{Q0}.lora_B.weight"
    from safetensors.torch import load_file

    want = load_file(layout.weights_path)[key].float().numpy()
    got = read_tensor(layout.weights_path, layout.header[key])
    assert got.dtype.name == "float32" and got.shape == (32, 4)
    assert (got == want).all()


def test_rank_disagreeing_with_config_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path):
    wrong_r = edit_dir(llama_adapter, tmp_path / "r8", config={"r": 8})
    result = _format(check, wrong_r, pico_llama)
    assert "r=8" in result.detail
    assert len(result.data["problems"]) == 4  # every pair

    pattern = edit_dir(llama_adapter, tmp_path / "pattern", config={"rank_pattern": {"q_proj": 2}})
    result = _format(check, pattern, pico_llama)
    assert len(result.data["problems"]) == 2  # the q_proj pairs of both layers only
    assert all("q_proj" in p and "r=2" in p for p in result.data["problems"])


def test_b_with_other_rank_than_a_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    adapter = edit_dir(llama_adapter, tmp_path / "b3", tensors=_set(f"{Q0}.lora_B.weight", lambda v: v[:, :3]))
    result = _format(check, adapter, pico_llama)
    assert "lora_B[32, 3]" in result.detail and "r=4" in result.detail


def test_renamed_lora_key_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    def rename(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t[f"{Q0}.lora_X.weight"] = t.pop(f"{Q0}.lora_A.weight")
        return t

    adapter = edit_dir(llama_adapter, tmp_path / "renamed", tensors=rename)
    result = _format(check, adapter, pico_llama)
    problems = " | ".join(result.data["problems"])
    assert "lora_X.weight: unknown LoRA tensor" in problems
    assert "lora_A is missing" in problems


def test_dora_adapter_fails(check, pico_llama: Path, dora_adapter: Path) -> None:
    with pytest.raises(UnsupportedError, match="DoRA"):
        read_adapter(dora_adapter)  # the merge path refuses it outright ...
    result = _format(check, dora_adapter, pico_llama)  # ... and the check says why
    assert result.detail.startswith("DoRA (use_dora=true) is not supported")
    assert any("lora_magnitude_vector" in p for p in result.data["problems"])


@pytest.mark.parametrize(
    "config",
    [{"peft_type": "IA3"}, {"layer_replication": [[0, 2]]}, {"use_qalora": True}, {"some_new_variant": {"k": 1}}],
)
def test_unsupported_config_features_fail(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path, config: dict[str, object]
) -> None:
    adapter = edit_dir(llama_adapter, tmp_path / "cfg", config=config)
    result = _format(check, adapter, pico_llama)
    assert "not supported" in result.detail or "not LoRA" in result.detail or "does not know" in result.detail


def test_conv_lora_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    def conv(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t[f"{Q0}.lora_A.weight"] = t[f"{Q0}.lora_A.weight"].reshape(4, 32, 1, 1)
        t[f"{Q0}.lora_B.weight"] = t[f"{Q0}.lora_B.weight"].reshape(32, 4, 1, 1)
        return t

    adapter = edit_dir(llama_adapter, tmp_path / "conv", tensors=conv)
    result = _format(check, adapter, pico_llama)
    assert "convolution is not supported" in result.detail


def test_pickle_only_adapter_fails(check, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    adapter = shutil.copytree(llama_adapter, tmp_path / "bin")
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    result = _format(check, adapter, pico_llama)
    assert "safetensors adapters only" in result.detail
    (adapter / "adapter_model.bin").unlink()
    with pytest.raises(AdapterError, match=r"no adapter_model\.safetensors"):
        read_adapter_for_checks(adapter)
    with pytest.raises(AdapterError, match="does not exist"):
        read_adapter_for_checks(tmp_path / "missing")


def test_integer_adapter_tensor_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    adapter = edit_dir(llama_adapter, tmp_path / "int", tensors=_set(f"{Q0}.lora_A.weight", lambda v: v.to(torch.int8)))
    result = _format(check, adapter, pico_llama)
    assert "non-floating adapter tensors" in result.detail and "(I8)" in result.detail


def test_truncated_adapter_file_fails(check, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    adapter = shutil.copytree(llama_adapter, tmp_path / "trunc")
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    # a damaged file is invalid input (exit 4) before any check runs: the header is validated
    # against the file's size when it is read (issue 8)
    with pytest.raises(AdapterError, match="file truncated: the header describes"):
        _format(check, adapter, pico_llama)


def test_empty_adapter_fails(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    adapter = edit_dir(llama_adapter, tmp_path / "empty", tensors=lambda t: {})
    report = check(adapter, pico_llama, source=pico_llama)
    assert report.result("format").status == "fail"
    assert "holds no tensors" in report.result("format").detail
    assert report.result("coverage").status == "fail"
    assert "changes no base tensor" in report.result("coverage").detail


def test_manifest_describing_another_adapter_fails(
    check, make_manifest, pico_llama: Path, llama_adapter: Path, gpt2_adapter: Path, pico_gpt2: Path
) -> None:
    from patchctl.bases import read_local_base
    from patchctl.checks import run_checks

    manifest = make_manifest(gpt2_adapter, read_local_base(pico_gpt2))  # fan_in_fan_out, 2 pairs
    report = run_checks(read_adapter_for_checks(llama_adapter), read_local_base(pico_llama), manifest=manifest)
    problems = report.result("format").data["problems"]
    assert report.result("format").status == "fail"
    assert "patch.json lora.fan_in_fan_out=True but the adapter has False" in problems
    assert "patch.json lora.lora_pairs=2 but the adapter has 4" in problems


@pytest.mark.parametrize(
    ("name", "rekey"),
    [
        ("unprefixed", lambda k: k.removeprefix("base_model.model.")),
        ("wrapped_twice", lambda k: "base_model.model." + k),
    ],
)
def test_keys_not_under_one_peft_prefix_are_refused(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path, name: str, rekey
) -> None:
    # PeftModel.from_pretrained loads none of these keys (missing-keys warning), so PEFT's merge
    # leaves the base as it is; patchctl used to strip/suffix-match them and merge the delta (exit 0)
    from patchctl.errors import InvalidInputError
    from patchctl.merge import plan_merge

    adapter = edit_dir(llama_adapter, tmp_path / name, tensors=lambda t: {rekey(k): v for k, v in t.items()})
    result = _format(check, adapter, pico_llama)
    assert "not under one `base_model.model.` prefix" in " | ".join(result.data["problems"])
    with pytest.raises(InvalidInputError, match="PEFT would load none of them"):
        plan_merge(read_adapter(adapter), pico_llama)
