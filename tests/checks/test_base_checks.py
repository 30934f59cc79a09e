"""``family``, ``coverage``, ``shapes``, ``dtype``, ``vocab``, ``lineage``: a patch/base pair
built to trip each, and the result's detail and data."""

from __future__ import annotations

from pathlib import Path

import torch

from patchctl.schemas import CompatReport

Q0 = "base_model.model.model.layers.0.self_attn.q_proj"
Q_PROJ0 = "model.layers.0.self_attn.q_proj.weight"


def statuses(report: CompatReport) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


# --- family -------------------------------------------------------------------------------


def test_gpt2_adapter_on_llama_base_fails(check, pico_llama: Path, pico_gpt2: Path, gpt2_adapter: Path) -> None:
    report = check(gpt2_adapter, pico_llama, source=pico_gpt2)
    s = statuses(report)
    assert (s["family"], s["coverage"], s["lineage"]) == ("fail", "fail", "fail")
    assert "model_type gpt2 → llama" in report.result("family").detail
    assert report.result("lineage").data["relation"] == "different_family"
    assert report.result("coverage").data["unmatched"] == 2
    assert report.exit_code() == 21
    assert "FAIL" in report.summary() and "family" in report.summary()


def test_other_layer_count_fails_family_and_coverage(
    check, pico_llama: Path, llama_3layers: Path, llama_3layers_adapter: Path
) -> None:
    # trained on a 3-layer Llama, applied to the 2-layer one: layer 2 has nowhere to go
    report = check(llama_3layers_adapter, pico_llama, source=llama_3layers)
    s = statuses(report)
    assert s["family"] == "fail" and "num_hidden_layers 3 → 2" in report.result("family").detail
    cov = report.result("coverage")
    assert cov.status == "fail"
    assert (cov.data["matched"], cov.data["unmatched"]) == (4, 2)
    assert "2 of 6 targets have no base tensor" in cov.detail
    assert "model.layers.2.self_attn" in cov.detail
    # same model_type, other structure: lineage only warns
    assert report.result("lineage").data["relation"] == "same_family"


def test_other_architecture_warns(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    base = edit_dir(pico_llama, tmp_path / "cls", config={"architectures": ["LlamaForSequenceClassification"]})
    report = check(llama_adapter, base, source=pico_llama)
    family = report.result("family")
    assert (
        family.status == "warn" and "architectures LlamaForCausalLM → LlamaForSequenceClassification" in family.detail
    )


# --- coverage -------------------------------------------------------------------------------


def _rename_keys(old: str, new: str):
    def edit(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k.replace(old, new): v for k, v in t.items()}

    return edit


def test_renamed_module_fails_coverage(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    adapter = edit_dir(llama_adapter, tmp_path / "qq", tensors=_rename_keys("q_proj", "qq_proj"))
    report = check(adapter, pico_llama, source=pico_llama)
    assert report.result("format").status == "pass"
    cov = report.result("coverage")
    assert cov.status == "fail"
    assert (cov.data["matched"], cov.data["unmatched"]) == (2, 2)
    assert sorted(cov.data["unmatched_targets"]) == [
        "model.layers.0.self_attn.qq_proj.weight",
        "model.layers.1.self_attn.qq_proj.weight",
    ]


def test_ambiguous_key_fails_coverage(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    # a key without its layer path matches the q_proj of every layer
    adapter = edit_dir(
        llama_adapter, tmp_path / "amb", tensors=_rename_keys("model.model.layers.0.self_attn", "model.self_attn")
    )
    cov = check(adapter, pico_llama, source=pico_llama).result("coverage")
    assert cov.status == "fail"
    assert cov.data["ambiguous"] == 2
    assert cov.data["ambiguous_targets"]["self_attn.q_proj.weight"] == [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.q_proj.weight",
    ]
    assert "match several base tensors" in cov.detail


def test_two_keys_on_one_base_tensor_fail_coverage(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path
) -> None:
    def duplicate(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for part in ("lora_A", "lora_B"):  # same module, saved again without the "model." prefix
            t[f"base_model.model.layers.0.self_attn.q_proj.{part}.weight"] = t[f"{Q0}.{part}.weight"].clone()
        return t

    adapter = edit_dir(llama_adapter, tmp_path / "dup", tensors=duplicate)
    cov = check(adapter, pico_llama, source=pico_llama).result("coverage")
    assert cov.status == "fail"
    assert cov.data["colliding_targets"] == {
        Q_PROJ0: ["layers.0.self_attn.q_proj.weight", Q_PROJ0],
    }


def test_lora_bias_on_module_without_bias_fails_coverage(check, pico_llama: Path, llama_bias_adapter: Path) -> None:
    cov = check(llama_bias_adapter, pico_llama, source=pico_llama).result("coverage")
    assert cov.status == "fail"
    assert sorted(cov.data["unmatched_targets"]) == [
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.1.self_attn.q_proj.bias",
    ]


# --- shapes ---------------------------------------------------------------------------------


def test_wrong_out_features_fail_shapes(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    def grow(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t[f"{Q0}.lora_B.weight"] = torch.cat([t[f"{Q0}.lora_B.weight"], torch.zeros(1, 4)])
        return t

    adapter = edit_dir(llama_adapter, tmp_path / "grow", tensors=grow)
    report = check(adapter, pico_llama, source=pico_llama)
    assert report.result("format").status == "pass"  # consistent with r, just the wrong module size
    shapes = report.result("shapes")
    assert shapes.status == "fail"
    assert shapes.data["mismatches"] == [f"model.layers.0.self_attn.q_proj: delta[33, 32] vs base {Q_PROJ0}[32, 32]"]


def test_fan_in_fan_out_flag_disagreeing_with_the_base_warns(
    check, edit_dir, tmp_path: Path, pico_gpt2: Path, gpt2_adapter: Path
) -> None:
    # GPT-2's Conv1D stores [in, out]: the layout comes from the base, so a config flag that says
    # otherwise for every target is reported (warn), not taken at its word (it used to fail the check)
    adapter = edit_dir(gpt2_adapter, tmp_path / "nofifo", config={"fan_in_fan_out": False})
    shapes = check(adapter, pico_gpt2, source=pico_gpt2).result("shapes")
    assert shapes.status == "warn"
    assert "fan_in_fan_out=false but the base stores" in shapes.detail and "Conv1D" in shapes.detail
    assert shapes.data["mismatches"] == []
    assert "transformer.h.0.attn.c_attn" in shapes.data["transposed_targets"]


def test_conv1d_delta_of_wrong_size_still_fails(
    check, edit_dir, tmp_path: Path, pico_gpt2: Path, gpt2_adapter: Path
) -> None:
    key = "base_model.model.transformer.h.0.attn.c_attn"

    def shrink(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t[f"{key}.lora_B.weight"] = t[f"{key}.lora_B.weight"][:64]
        return t

    adapter = edit_dir(gpt2_adapter, tmp_path / "shrunk", tensors=shrink)
    shapes = check(adapter, pico_gpt2, source=pico_gpt2).result("shapes")
    assert shapes.status == "fail"
    assert "delta[32, 64] (Conv1D: stored as (in, out)) vs base transformer.h.0.attn.c_attn.weight[32, 96]" in (
        shapes.detail
    )


def test_lora_bias_shape_mismatch_fails(check, edit_dir, tmp_path: Path, pico_gpt2: Path, gpt2_bias_adapter: Path):
    key = "base_model.model.transformer.h.0.attn.c_attn"

    def shrink(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t[f"{key}.lora_B.weight"] = t[f"{key}.lora_B.weight"][:64]
        t[f"{key}.lora_B.bias"] = t[f"{key}.lora_B.bias"][:64]
        return t

    adapter = edit_dir(gpt2_bias_adapter, tmp_path / "bias", tensors=shrink)
    shapes = check(adapter, pico_gpt2, source=pico_gpt2).result("shapes")
    assert shapes.status == "fail"
    assert any("lora_B bias[64] vs base transformer.h.0.attn.c_attn.bias[96]" in m for m in shapes.data["mismatches"])


def test_replacement_of_other_shape_fails(check, lm_head_adapter: Path, pico_llama: Path, llama_vocab128: Path) -> None:
    # a trained lm_head [96, 32] cannot replace the 128-token head; the tokenizer differs too
    report = check(lm_head_adapter, llama_vocab128, source=pico_llama)
    s = statuses(report)
    assert (s["shapes"], s["vocab"], s["coverage"]) == ("fail", "fail", "pass")
    assert "lm_head.weight[96, 32] replaces lm_head.weight[128, 32]" in report.result("shapes").detail


# --- dtype ----------------------------------------------------------------------------------


def test_quantization_config_fails_dtype(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path
) -> None:
    for method in ("gptq", "awq", "fp8"):
        base = edit_dir(
            pico_llama, tmp_path / method, config={"quantization_config": {"quant_method": method, "bits": 4}}
        )
        dtype = check(llama_adapter, base, source=pico_llama).result("dtype")
        assert dtype.status == "fail"
        assert f"quantization_config: {method}" in dtype.detail
    bnb = edit_dir(pico_llama, tmp_path / "bnb", config={"quantization_config": {"load_in_4bit": True}})
    assert "bitsandbytes" in check(llama_adapter, bnb, source=pico_llama).result("dtype").detail


def test_integer_and_fp8_weights_fail_dtype(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path):
    for name, dtype in (("int8", torch.int8), ("fp8", torch.float8_e4m3fn)):

        def cast(t: dict[str, torch.Tensor], d: torch.dtype = dtype) -> dict[str, torch.Tensor]:
            t[Q_PROJ0] = t[Q_PROJ0].to(d)
            return t

        base = edit_dir(pico_llama, tmp_path / name, tensors=cast)
        result = check(llama_adapter, base, source=pico_llama).result("dtype")
        assert result.status == "fail"
        assert Q_PROJ0 in result.detail and ("I8" if name == "int8" else "F8_E4M3") in result.detail


def test_gptq_style_tensors_fail_dtype_only_on_targets(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path
) -> None:
    def gptq(module: str):
        def edit(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            t[f"{module}.qweight"] = torch.zeros(4, 64, dtype=torch.int32)
            t[f"{module}.scales"] = torch.ones(1, 64, dtype=torch.float16)
            return t

        return edit

    on_target = edit_dir(pico_llama, tmp_path / "gptq-q", tensors=gptq("model.layers.0.self_attn.q_proj"))
    result = check(llama_adapter, on_target, source=pico_llama).result("dtype")
    assert result.status == "fail" and "model.layers.0.self_attn.q_proj (quantized" in result.detail
    # a quantized module the patch does not touch is copied as it is: a warning, not a refusal
    elsewhere = edit_dir(pico_llama, tmp_path / "gptq-up", tensors=gptq("model.layers.0.mlp.up_proj"))
    result = check(llama_adapter, elsewhere, source=pico_llama).result("dtype")
    assert result.status == "warn" and "model.layers.0.mlp.up_proj" in result.detail
    assert result.data["quantized_modules_elsewhere"] == 1


def test_f64_targets_warn(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    base = edit_dir(pico_llama, tmp_path / "f64", tensors=lambda t: {k: v.double() for k, v in t.items()})
    report = check(llama_adapter, base, source=pico_llama)
    assert report.result("dtype").status == "warn"
    assert report.result("dtype").data["target_dtypes"] == {"F64": 4}


# --- vocab / tokenizer -------------------------------------------------------------------------


def test_other_vocab_size_warns_when_vocab_rows_are_untouched(
    check, pico_llama: Path, llama_vocab128: Path, llama_adapter: Path
) -> None:
    vocab = check(llama_adapter, llama_vocab128, source=pico_llama).result("vocab")
    assert vocab.status == "warn", vocab.detail
    assert "vocabulary size 96 → 128; the patch does not touch embeddings" in vocab.detail


# --- lineage --------------------------------------------------------------------------------


def test_lineage_relations(
    check, pico_llama: Path, llama_other: Path, llama_updated: Path, llama_adapter: Path
) -> None:
    from patchctl.bases import read_local_base

    source = read_local_base(pico_llama).weights_sha256
    other = read_local_base(llama_other).weights_sha256
    rel = {
        "identical": check(llama_adapter, pico_llama, source=pico_llama),
        "descendant": check(llama_adapter, llama_updated, source=pico_llama, ancestors=(source,)),
        # an ancestor list that does not hold the source does not make a descendant
        "same_structure": check(llama_adapter, llama_updated, source=pico_llama, ancestors=(other,)),
    }
    for want, report in rel.items():
        assert report.result("lineage").data["relation"] == want
    assert rel["same_structure"].result("lineage").status == "warn"


def test_lm_head_replacement_on_tied_base_maps_through_the_embedding(check, models_dir: Path, pico_gpt2: Path) -> None:
    """A tied base stores no lm_head tensor; the checks agree with the merge engine, which gives
    the head its own (untied) tensor, so coverage passes and names the tie."""
    import picomodels

    adapter = picomodels.make_adapter(
        pico_gpt2,
        models_dir / "gpt2-lmhead",
        target_modules=["c_attn"],
        fan_in_fan_out=True,
        modules_to_save=["lm_head"],
    )
    report = check(adapter, pico_gpt2, source=pico_gpt2)
    cov = report.result("coverage")
    assert cov.status == "pass", cov.detail
    assert "tied to transformer.wte.weight" in cov.detail
    assert cov.data["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    assert report.result("shapes").status == "pass"
