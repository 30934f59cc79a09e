"""Compatible patch/base pairs: everything passes, or only what must warn warns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from patchctl.adapter import read_adapter
from patchctl.bases import read_local_base
from patchctl.checks import CHECKS, run_checks
from patchctl.errors import InvalidInputError
from patchctl.schemas import CompatReport

ALL = ["format", "family", "coverage", "shapes", "dtype", "vocab", "lineage"]


def statuses(report: CompatReport) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


def test_registry_order() -> None:
    assert list(CHECKS) == ALL


def test_adapter_on_its_own_base_passes(check, pico_llama: Path, llama_adapter: Path) -> None:
    report = check(llama_adapter, pico_llama, source=pico_llama)
    assert statuses(report) == dict.fromkeys(ALL, "pass"), report.summary()
    assert report.exit_code() == 0
    assert report.result("lineage").data["relation"] == "identical"
    cov = report.result("coverage").data
    assert (cov["targets"], cov["matched"], cov["unmatched"], cov["ambiguous"]) == (4, 4, 0, 0)
    assert report.result("format").data["pairs"] == 4
    assert report.result("vocab").data["vocab_tensors_patched"] == []
    assert report.patch == "acme/test-patch@1.0.0"
    assert report.manifest_digest is not None and len(report.manifest_digest) == 64
    assert report.base_weights_sha256 == read_local_base(pico_llama).weights_sha256
    assert CompatReport.from_json(report.to_json()) == report


def test_updated_base_recorded_as_descendant_passes(
    check, pico_llama: Path, llama_updated: Path, llama_adapter: Path
) -> None:
    source = read_local_base(pico_llama).weights_sha256
    report = check(llama_adapter, llama_updated, source=pico_llama, ancestors=("0" * 64, source))
    assert statuses(report) == dict.fromkeys(ALL, "pass"), report.summary()
    assert report.result("lineage").data["relation"] == "descendant"
    assert "recorded descendant" in report.result("lineage").detail


def test_updated_base_without_lineage_warns(check, pico_llama: Path, llama_updated: Path, llama_adapter: Path) -> None:
    report = check(llama_adapter, llama_updated, source=pico_llama)
    assert statuses(report) == dict.fromkeys(ALL, "pass") | {"lineage": "warn"}
    assert report.exit_code() == 20
    lineage = report.result("lineage")
    assert lineage.data["relation"] == "same_structure"
    assert "validate before use" in lineage.detail


def test_unrelated_base_of_same_family_warns(check, pico_llama: Path, llama_other: Path, llama_adapter: Path) -> None:
    report = check(llama_adapter, llama_other, source=pico_llama)
    assert statuses(report)["lineage"] == "warn"
    assert report.status == "warn"


def test_sharded_base_is_covered(check, pico_llama: Path, pico_llama_sharded: Path, llama_adapter: Path) -> None:
    report = check(llama_adapter, pico_llama_sharded, source=pico_llama)
    # same tensors in other files: structure equal, weights fingerprint not
    assert statuses(report) == dict.fromkeys(ALL, "pass") | {"lineage": "warn"}


def test_gpt2_fan_in_fan_out_passes(check, pico_gpt2: Path, gpt2_adapter: Path, gpt2_bias_adapter: Path) -> None:
    for adapter in (gpt2_adapter, gpt2_bias_adapter):
        report = check(adapter, pico_gpt2, source=pico_gpt2)
        assert statuses(report) == dict.fromkeys(ALL, "pass"), report.summary()
        assert report.result("shapes").data["fan_in_fan_out"] is True
    bias = check(gpt2_bias_adapter, pico_gpt2, source=pico_gpt2)
    assert bias.result("coverage").data["targets"] == 4  # 2 weights + 2 biases


def test_bf16_base_and_adapter_pass(check, llama_bf16: Path, llama_bf16_adapter: Path) -> None:
    report = check(llama_bf16_adapter, llama_bf16, source=llama_bf16)
    assert statuses(report) == dict.fromkeys(ALL, "pass"), report.summary()
    assert report.result("dtype").data["target_dtypes"] == {"BF16": 4}


def test_bf16_and_f16_adapter_values_are_read(check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path):
    import torch

    for dtype, name in ((torch.bfloat16, "BF16"), (torch.float16, "F16")):
        adapter = edit_dir(
            llama_adapter, tmp_path / name, tensors=lambda t, d=dtype: {k: v.to(d) for k, v in t.items()}
        )
        report = check(adapter, pico_llama, source=pico_llama)
        assert report.status == "pass", report.summary()
        assert report.result("format").data["dtypes"] == [name]


def test_embedding_and_lm_head_patches_pass_with_same_tokenizer(
    check, pico_llama: Path, embed_adapter: Path, lm_head_adapter: Path
) -> None:
    emb = check(embed_adapter, pico_llama, source=pico_llama)
    assert statuses(emb) == dict.fromkeys(ALL, "pass"), emb.summary()
    assert emb.result("vocab").data["vocab_tensors_patched"] == ["model.embed_tokens.weight"]
    assert "exact token ids required and matched" in emb.result("vocab").detail
    head = check(lm_head_adapter, pico_llama, source=pico_llama)
    assert statuses(head) == dict.fromkeys(ALL, "pass"), head.summary()
    assert head.result("vocab").data["vocab_tensors_patched"] == ["lm_head.weight"]


def test_raw_adapter_without_manifest_warns_where_source_is_needed(
    check, pico_llama: Path, llama_adapter: Path
) -> None:
    report = check(llama_adapter, pico_llama)
    assert statuses(report) == dict.fromkeys(ALL, "pass") | dict.fromkeys(["family", "vocab", "lineage"], "warn")
    for name in ("family", "vocab", "lineage"):
        assert "no manifest" in report.result(name).detail
    assert report.manifest_digest is None
    assert report.patch == str(llama_adapter)


def test_selected_checks_and_unknown_name(pico_llama: Path, llama_adapter: Path) -> None:
    layout, base = read_adapter(llama_adapter), read_local_base(pico_llama)
    report = run_checks(layout, base, only=["coverage", "format"], patch="x/y@1")
    assert [r.name for r in report.results] == ["coverage", "format"]
    assert report.patch == "x/y@1"
    with pytest.raises(InvalidInputError, match="unknown check"):
        run_checks(layout, base, only=["drift?"])


def test_checks_import_no_torch(pico_llama: Path, llama_adapter: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from patchctl.bases import read_local_base\n"
        "from patchctl.checks import read_adapter_for_checks, run_checks\n"
        f"r = run_checks(read_adapter_for_checks(Path({str(llama_adapter)!r})), read_local_base(Path({str(pico_llama)!r})))\n"
        "assert r.results\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_embedding_lora_onto_an_update_says_the_carried_embedding_is_not_written(
    check, pico_llama: Path, llama_updated: Path, embed_adapter: Path
) -> None:
    """PEFT saves θ's embedding base layer with embedding LoRA; the install writes θ′ + Δθ and
    nothing of θ, so the check says in one line that the copy is not written (information)."""
    from patchctl.bases import read_local_base

    onto_update = check(
        embed_adapter, llama_updated, source=pico_llama, ancestors=(read_local_base(pico_llama).weights_sha256,)
    )
    vocab = onto_update.result("vocab")
    assert vocab.status == "pass", vocab.detail
    assert "carries a copy of θ's model.embed_tokens.weight" in vocab.detail
    assert "not written onto this base" in vocab.detail and "adds only the LoRA delta" in vocab.detail
    assert vocab.data["embedding_base_layers_carried"] == ["model.embed_tokens.weight"]
    assert onto_update.result("lineage").status == "pass"
