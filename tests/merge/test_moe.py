"""LoRA on MoE expert parameters through PEFT's ``target_parameters`` (``ParamWrapper``): transformers
holds Mixtral / Qwen3-MoE experts as fused 3-D parameters (``experts.gate_up_proj`` (experts, 2·I, H),
``experts.down_proj``) but their checkpoints store one 2-D tensor per expert and projection; the merge
lands each expert's slice of PEFT's delta on those tensors, bit for bit as ``merge_and_unload``.
gpt-oss stores the fused tensors as they are, (experts, in, out)."""

from __future__ import annotations

import re
from pathlib import Path

import picozoo
import pytest
import torch
from mergeref import DTYPES, Reference

from patchctl.adapter import EXPERT_STORAGE, PARAM_ORDER, TRANSPOSED_EXPERTS, read_adapter
from patchctl.bases import read_local_base
from patchctl.checks import run_checks
from patchctl.errors import InvalidInputError
from patchctl.merge import execute_merge, plan_merge

IDS = torch.tensor([[1, 5, 9, 23, 42, 7, 3, 77]])
KINDS = ("mixtral", "qwen3moe", "gptoss")
PARAMS = ["experts.gate_up_proj", "experts.down_proj"]


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("moe")
    out: dict[tuple[str, str], Path] = {}
    for kind in KINDS:
        for d in DTYPES:
            out[(kind, d)] = picozoo.make_base(root / f"{kind}-{d}", kind, dtype=DTYPES[d])
        fp32 = out[(kind, "fp32")]
        out[(kind, "both")] = picozoo.make_adapter(
            fp32, root / f"{kind}-both", kind, target_modules=["q_proj"], target_parameters=PARAMS, rank_pattern={}
        )
        out[(kind, "down")] = picozoo.make_adapter(
            fp32, root / f"{kind}-down", kind, target_modules=["q_proj"], target_parameters=["experts.down_proj"]
        )
        out[(kind, "bf16-saved")] = picozoo.make_adapter(
            fp32, root / f"{kind}-adapter-saved-bf16", kind, target_modules=["q_proj"], target_parameters=PARAMS,
            save_dtype=torch.bfloat16,
        )  # fmt: skip
    return out


@pytest.mark.parametrize("adapter", ["both", "down", "bf16-saved"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", KINDS)
def test_expert_parameter_lora_equals_peft(
    kind: str, dtype: str, adapter: str, moe: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    base, ad = moe[(kind, dtype)], moe[(kind, adapter)]
    layout = read_adapter(ad)
    params = [p for p in layout.pairs if p.kind == "param"]
    assert params and all(p.num_experts == 4 for p in params)
    report = run_checks(layout, read_local_base(base), only=["format", "coverage", "shapes"])
    assert [r.status for r in report.results] == ["pass"] * 3, [r.detail for r in report.results]

    out = execute_merge(plan_merge(layout, base), tmp_path / "out", provenance={}).out_dir
    ours = Reference.load_dir_tensors(out)
    reference = _peft_merged_checkpoint(base, ad, DTYPES[dtype], tmp_path / "reference")
    base_tensors = Reference.load_dir_tensors(base)
    changed = 0
    for name, tensor in ours.items():
        if tensor.dtype != reference[name].dtype:
            # untouched tensors the model class keeps in fp32 (gpt-oss norms on a fp16 base) are copied as
            # they are: transformers upcasts them at load exactly as it did for PEFT's model
            assert torch.equal(tensor, base_tensors[name]) and reference[name].dtype == torch.float32, name
            tensor = tensor.float()
        assert torch.equal(tensor, reference[name]), f"{kind}/{dtype}/{adapter}: {name} differs from PEFT"
        changed += "experts" in name and not torch.equal(tensor, base_tensors[name])
    # every expert, every projection, both layers (gpt-oss: one fused tensor per projection)
    assert changed >= (1 if kind == "gptoss" else 4) * (1 if adapter == "down" else 2 if kind == "gptoss" else 3) * 2
    if dtype == "fp32":
        torch.testing.assert_close(
            Reference.model_logits(out, IDS), Reference.peft_logits(base, ad, IDS), atol=2e-5, rtol=1e-4
        )


def _peft_merged_checkpoint(base: Path, adapter: Path, dtype: torch.dtype, out: Path) -> dict[str, torch.Tensor]:
    """merge_and_unload, saved by transformers (which splits the fused experts back per expert)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(out)
    return Reference.load_dir_tensors(out)


def test_expert_count_mismatch_fails_coverage_and_install(moe: dict[tuple[str, str], Path], tmp_path: Path) -> None:
    """θ′ with 3 experts per layer (a checkpoint without expert 3): the 4-expert patch does not fit."""
    import shutil

    from safetensors.torch import load_file, save_file

    base = tmp_path / "three"
    shutil.copytree(moe[("qwen3moe", "fp32")], base)
    tensors = {k: v for k, v in load_file(base / "model.safetensors").items() if ".experts.3." not in k}
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    layout = read_adapter(moe[("qwen3moe", "both")])
    coverage = run_checks(layout, read_local_base(base), only=["coverage"]).results[0]
    assert coverage.status == "fail"
    assert "expert 3 has no" in coverage.detail
    with pytest.raises(InvalidInputError, match="expert 3 has no"):
        plan_merge(layout, base)


def test_expert_tables_match_the_installed_transformers() -> None:
    """EXPERT_STORAGE, TRANSPOSED_EXPERTS and PARAM_ORDER agree with transformers' conversion mapping,
    its ``is_transposed`` experts and the parameter order of the expert modules."""
    import transformers
    from transformers.conversion_mapping import _build_checkpoint_conversion_mapping, get_checkpoint_conversion_mapping

    mapping = _build_checkpoint_conversion_mapping()
    for model_type, (mem, disk, parts) in EXPERT_STORAGE.items():
        rules = get_checkpoint_conversion_mapping(model_type) or mapping[model_type]
        converters = {c.target_patterns[0].lstrip("."): c for c in rules if hasattr(c, "operations")}
        for param, names in parts.items():
            conv = converters[f"{mem.lstrip('.').replace('mlp.', '') if disk else mem.lstrip('.')}.{param}"]
            got = [re.sub(r".*\.\*\.(\w+)\.weight$", r"\1", src) for src in conv.source_patterns]
            assert got == list(names), (model_type, param)
    models = Path(transformers.__file__).parent / "models"
    transposed = set()
    for modeling in models.glob("*/modeling_*.py"):
        if re.search(r"@use_experts_implementation\([^)]*is_transposed=True", modeling.read_text(encoding="utf-8")):
            config = (modeling.parent / modeling.name.replace("modeling_", "configuration_")).read_text(
                encoding="utf-8"
            )
            transposed.update(re.findall(r'model_type = "([^"]+)"', config))
    assert transposed == TRANSPOSED_EXPERTS
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

    for cls, kind in ((MixtralExperts, "mixtral"), (Qwen3MoeExperts, "qwen3moe"), (GptOssExperts, "gptoss")):
        names = [n for n, _ in cls(picozoo.pico_config(kind)).named_parameters(recurse=False)]
        assert names == [n for n in PARAM_ORDER if n in names]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", KINDS)
def test_expert_deltas_in_blocks_of_experts_equal_peft(
    kind: str, dtype: str, moe: dict[tuple[str, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a memory budget smaller than a fused experts delta, the delta is computed a block of
    experts at a time (one expert here; each block probed first), still bit for bit PEFT's; a
    per-expert checkpoint tensor holds one expert's delta, bounded already."""
    from patchctl.merge import _execute
    from patchctl.merge._blocks import Blocking

    monkeypatch.setattr(_execute, "ROW_CHUNK_BYTES", 256)  # several reads per tensor
    base, ad = moe[(kind, dtype)], moe[(kind, "both")]
    plan = plan_merge(read_adapter(ad), base)
    fused = [t for s in plan.shards for t in s.tensors if any(a.kind == "lora_param" for a in t.actions)]
    smallest = min(4 * t.shape[1] * t.shape[2] for t in fused if len(t.shape) == 3) if kind == "gptoss" else 0
    blocking = Blocking(max_memory=3 * max(smallest, 1), reserved=0, overhead=0, floor=0, min_block=2)
    if kind == "gptoss":  # fused (experts, in, out) tensors: cut into blocks of one expert
        assert all(len(blocking.ranges(t)) == t.shape[0] for t in fused if len(t.shape) == 3)
    calls: list[tuple[int, int] | None] = []
    real = _execute._delta_param
    monkeypatch.setattr(
        _execute, "_delta_param", lambda a, la, lb, rows=None: calls.append(rows) or real(a, la, lb, rows)
    )
    result = execute_merge(plan, tmp_path / "out", provenance={}, blocking=blocking)
    assert result.merged_whole == ()
    if kind == "gptoss":
        assert (0, 1) in calls and (1, 2) in calls  # blocks of one expert (after the probes)
    ours = Reference.load_dir_tensors(result.out_dir)
    reference = _peft_merged_checkpoint(base, ad, DTYPES[dtype], tmp_path / "reference")
    for name, tensor in ours.items():
        ref = reference[name]
        assert torch.equal(tensor if tensor.dtype == ref.dtype else tensor.float(), ref), f"{kind}/{dtype}: {name}"
