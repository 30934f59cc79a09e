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


REALCONFIGS = Path(__file__).resolve().parents[2].parent / "shared" / "realconfigs"
_REAL = sorted(str(p.parent.relative_to(REALCONFIGS)) for p in REALCONFIGS.glob("*/config.json"))


@pytest.mark.parametrize("name", _REAL or ["(shared/realconfigs not found)"])
def test_a_plan_proved_empty_from_the_source_is_the_one_transformers_builds(name: str, tmp_path: Path) -> None:
    """Real release configs: where the modeling source proves that nothing is kept in fp32 (no
    model built, no transformers import), transformers' own plan, built on the meta device, is
    empty in fp16 and bf16 alike."""
    import json

    from patchctl.merge import _fp32

    if not _REAL:
        pytest.skip(f"{REALCONFIGS} not found (shared/ beside the repository)")
    config = json.loads((REALCONFIGS / name / "config.json").read_text(encoding="utf-8"))
    if not _fp32._proved_empty(config):
        assert "auto_map" in config or config["model_type"] not in ("llama", "mistral", "qwen2", "qwen3", "gemma2")
        return
    (tmp_path / "config.json").write_text(json.dumps(config))
    for dtype in ("F16", "BF16"):
        assert _fp32._compute(tmp_path, config["architectures"][0], dtype) == ((), None), (name, dtype)


def test_what_the_source_does_not_prove_is_computed(t5: dict[str, Path]) -> None:
    """Not proved (so built and asked): a class that names ``_keep_in_fp32_modules`` (T5), a
    composite model whose sub-configs name other models, remote code, a model type transformers
    does not have, an architecture its model's file does not define."""
    import json

    from patchctl.merge import _fp32

    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    assert _fp32._proved_empty(llama)
    assert not _fp32._proved_empty(json.loads((t5["fp16"] / "config.json").read_text()))
    assert not _fp32._proved_empty({**llama, "text_config": {"model_type": "llama"}})
    assert not _fp32._proved_empty({**llama, "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}})
    assert not _fp32._proved_empty({**llama, "model_type": "no_such_model"})
    assert not _fp32._proved_empty({**llama, "model_type": "../llama"})
    assert not _fp32._proved_empty({**llama, "architectures": ["MistralForCausalLM"]})
    assert not _fp32._proved_empty({**llama, "architectures": ["LlamaForCausalLM", "LlamaModel"]})
    assert not _fp32._proved_empty({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"})
    assert not _fp32._proved_empty({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"})


def test_a_proved_plan_needs_neither_transformers_nor_torch_nor_the_cache(tmp_path: Path) -> None:
    """`known()` (whether the install can merge in a child process at once) and the plan itself,
    for a bf16 Llama base with an empty cache: answered from the source, nothing imported or cached."""
    import json
    import subprocess
    import sys

    from safetensors.torch import save_file

    base = tmp_path / "base"
    base.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16"}
    (base / "config.json").write_text(json.dumps(config))
    save_file({"lm_head.weight": torch.zeros(4, 4, dtype=torch.bfloat16)}, str(base / "model.safetensors"))
    code = (
        "import sys, json; from pathlib import Path; from patchctl.merge import _fp32\n"
        f"base, cache = Path({str(base)!r}), Path({str(tmp_path / 'plans')!r})\n"
        "known = _fp32.known(base, cache)\n"
        "plan = _fp32.fp32_patterns(base, json.loads((base / 'config.json').read_text()), 'BF16', cache_dir=cache)\n"
        "print(json.dumps([known, list(plan[0]), plan[1], 'torch' in sys.modules, 'transformers' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == [True, [], None, False, False]
    assert not (tmp_path / "plans").exists()


@pytest.mark.slow
def test_every_class_proved_empty_agrees_with_transformers() -> None:
    """Every model class of the installed transformers that the source proves keeps nothing in
    fp32, built on the meta device from its model type's default config: transformers' own dtype
    plan is empty, in fp16 and bf16 (362 classes with transformers 5.24, about 40 s)."""
    import re

    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from patchctl.merge import _fp32

    checked, disagree = 0, []
    for model_type in sorted(CONFIG_MAPPING_NAMES):
        text = _fp32._modeling_source(model_type)
        if text is None:
            continue
        try:
            config = AutoConfig.for_model(model_type)
        except Exception:  # a config that needs arguments or extra packages
            continue
        for name in re.findall(r"^class (\w+(?:ForCausalLM|Model|ForConditionalGeneration|LMHeadModel))\(", text, re.M):
            cls = getattr(transformers, name, None)
            if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
                continue
            if not _fp32._proved_empty({**config.to_dict(), "architectures": [name], "model_type": model_type}):
                continue
            try:
                with torch.device("meta"):
                    model = cls(config)
            except Exception:  # not buildable from the default config (extra packages, checks)
                continue
            checked += 1
            if any(model._get_dtype_plan(d) for d in (torch.float16, torch.bfloat16)):
                disagree.append(name)
    assert not disagree
    assert checked >= 100  # the proof is used widely, so this test checks something
