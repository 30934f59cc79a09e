"""``family``: shape facts fail, positional and numeric facts warn with old → new, a text model
and its multimodal wrapper match, old manifests compare what they recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchctl.bases import family_from_config, read_local_base
from patchctl.checks import read_adapter_for_checks, run_checks


def test_positional_changes_warn_with_old_and_new(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path
) -> None:
    new = {
        "rope_theta": 1000000.0,
        "max_position_embeddings": 128,
        "sliding_window": 32,
        "rope_scaling": {"type": "linear", "factor": 2.0},
        "rms_norm_eps": 1e-5,
        "hidden_act": "gelu",
    }
    base = edit_dir(pico_llama, tmp_path / "rope", config=new)
    family = check(llama_adapter, base, source=pico_llama).result("family")
    assert family.status == "warn", family.detail
    for part in (
        "rope_theta 10000 → 1000000",
        "max_position_embeddings 64 → 128",
        "sliding_window unset → 32",
        'rope_scaling unset → {"factor":2.0,"rope_type":"linear"}',
        "norm_eps 1e-06 → 1e-05",
        "hidden_act silu → gelu",
    ):
        assert part in family.detail
    assert family.data["changes"]["rope_theta"] == [10000.0, 1000000.0]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("num_key_value_heads", 4, "num_key_value_heads 2 → 4"),
        ("num_attention_heads", 8, "num_attention_heads 4 → 8"),
        ("intermediate_size", 96, "intermediate_size 64 → 96"),
        ("head_dim", 16, "head_dim 8 → 16"),
    ],
)
def test_shape_facts_fail(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path, key: str, value: int, expected: str
) -> None:
    base = edit_dir(pico_llama, tmp_path / key, config={key: value})
    family = check(llama_adapter, base, source=pico_llama).result("family")
    assert family.status == "fail" and expected in family.detail


def test_noise_is_not_a_change(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    """Default-valued keys appearing, ints for floats, transformers_version, dtype vs torch_dtype."""
    cfg = json.loads((pico_llama / "config.json").read_text())
    noise = {
        "rope_theta": int(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]),
        "transformers_version": "9.9.9",
        "mlp_bias": False,
        "use_mrope": False,
        "attention_dropout": 0.0,
    }
    base = edit_dir(pico_llama, tmp_path / "noise", config=noise)
    family = check(llama_adapter, base, source=pico_llama).result("family")
    assert family.status == "pass", family.detail


def test_rope_parameters_transformers5_style() -> None:
    old = {"model_type": "llama", "rope_theta": 10000.0, "rope_scaling": None}
    new = {"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
    assert family_from_config(old).details == family_from_config(new).details
    yarn = {"model_type": "llama", "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}}
    d = family_from_config(yarn).details
    assert d is not None and d.rope_theta == 1e6 and d.rope_scaling == {"factor": 4.0, "rope_type": "yarn"}
    per_layer = {
        "model_type": "gemma3_text",
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    }
    d = family_from_config(per_layer).details
    assert d is not None and d.rope_theta is None
    assert d.rope_scaling == {
        "full_attention": {"factor": 8.0, "rope_theta": 1e6, "rope_type": "linear"},
        "sliding_attention": {"rope_theta": 1e4},
    }
    # use_sliding_window false: the window is not in force (Qwen2)
    qwen = {"model_type": "qwen2", "sliding_window": 131072, "use_sliding_window": False}
    assert family_from_config(qwen).details.sliding_window is None  # type: ignore[union-attr]


def _wrap(edit_dir, src: Path, dst: Path) -> Path:
    """The pico Llama as the language model of a multimodal wrapper (transformers-5 layout)."""
    cfg = json.loads((src / "config.json").read_text())
    text = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")}
    wrapper = {"model_type": "mistral3", "architectures": ["Mistral3ForConditionalGeneration"], "text_config": text}

    def rename(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            (k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k): v for k, v in t.items()
        }

    out = edit_dir(src, dst, tensors=rename)
    (out / "config.json").write_text(json.dumps(wrapper))
    return out


def test_text_patch_on_multimodal_wrapper_and_back(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path
) -> None:
    wrapped = _wrap(edit_dir, pico_llama, tmp_path / "wrapped")
    report = check(llama_adapter, wrapped, source=pico_llama)
    family = report.result("family")
    assert family.status == "warn" and "model_type llama → mistral3 (same language model)" in family.detail
    assert report.result("lineage").data["relation"] == "same_family"
    assert report.result("coverage").status == "pass", report.result("coverage").detail
    assert report.result("shapes").status == "pass"
    mapped = run_checks(read_adapter_for_checks(llama_adapter), read_local_base(wrapped))
    assert mapped.result("coverage").data["matched"] == 4
    # another language model inside the wrapper is still another family
    other = json.loads((wrapped / "config.json").read_text())
    other["text_config"]["model_type"] = "qwen2"
    (wrapped / "config.json").write_text(json.dumps(other))
    assert check(llama_adapter, wrapped, source=pico_llama).result("family").status == "fail"


def test_manifest_without_details_compares_what_it_recorded(
    make_manifest, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path
) -> None:
    source = read_local_base(pico_llama)
    m = make_manifest(llama_adapter, source)
    old = m.model_copy(
        update={
            "source_base": m.source_base.model_copy(
                update={"family": source.family.model_copy(update={"details": None})}
            )
        }
    )
    base = read_local_base(edit_dir(pico_llama, tmp_path / "rope", config={"rope_theta": 5.0}))
    family = run_checks(read_adapter_for_checks(llama_adapter), base, manifest=old).result("family")
    assert family.status == "pass" and "predates heads/rope/context facts" in family.detail
