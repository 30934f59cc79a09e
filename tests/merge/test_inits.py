"""Adapters whose ``init_lora_weights`` rewrites the base at load (PiSSA, OLoRA, CorDA, LoRA-GA,
LoftQ) are refused by the ``format`` check and by install alike (exit 6, the fix in the message);
converted to a plain LoRA with PEFT's ``path_initial_model_for_weight_conversion``, they install
exactly. Inits that leave the base alone (EVA, orthogonal, ...) are plain LoRA adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from catalogtools import run_cli
from mergeref import Reference

from patchctl.adapter import read_adapter
from patchctl.checks import run_checks
from patchctl.checks._run import read_adapter_for_checks
from patchctl.errors import UnsupportedError
from patchctl.merge import execute_merge, plan_merge

IDS = torch.tensor([[1, 5, 9, 23, 42, 7, 3, 77]])


def _trained_pissa(base: Path, root: Path, init: str = "pissa") -> tuple[Path, Path, torch.Tensor]:
    """A real PiSSA (or OLoRA) adapter made with PEFT and "trained" (A, B moved), saved both as is and
    converted to a plain LoRA; with the logits of the trained PeftModel."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=init)
    peft_model = get_peft_model(model, config)
    initial = root / "initial"
    peft_model.peft_config["default"].init_lora_weights = True  # PEFT's documented recipe for the conversion
    peft_model.save_pretrained(initial)
    peft_model.peft_config["default"].init_lora_weights = init
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.05)
    raw, converted = root / "raw", root / "converted"
    peft_model.save_pretrained(raw)
    peft_model.save_pretrained(converted, path_initial_model_for_weight_conversion=str(initial))
    with torch.no_grad():
        logits = peft_model.eval()(IDS).logits
    return raw, converted, logits


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_base_rewriting_init_refused_by_check_and_install_converted_installs_exactly(
    init: str, pico_llama: Path, tmp_path: Path
) -> None:
    raw, converted, trained_logits = _trained_pissa(pico_llama, tmp_path, init)
    assert json.loads((raw / "adapter_config.json").read_text())["init_lora_weights"] == init

    # refused: by install (exit 6) and by the format check, with the same reason and the fix
    with pytest.raises(UnsupportedError, match="path_initial_model_for_weight_conversion"):
        plan_merge(read_adapter(raw), pico_llama)
    from patchctl.bases import read_local_base

    report = run_checks(read_adapter_for_checks(raw), read_local_base(pico_llama), only=["format"])
    assert report.results[0].status == "fail"
    assert "path_initial_model_for_weight_conversion" in report.results[0].detail
    home, out_dir = tmp_path / "home", tmp_path / "o"
    res = run_cli(
        ["--home", home, "push", raw, "--name", "acme/pissa", "--version", "1", "--task", "t", "--base", pico_llama]
    )
    assert res.code == 6 and "path_initial_model_for_weight_conversion" in res.stderr, res.stderr
    for extra in ([], ["--force"]):  # unsupported, not merely failing checks: --force changes nothing
        res = run_cli(["--home", home, "install", raw, "--onto", pico_llama, "--out", out_dir, *extra])
        assert res.code == 6 and "path_initial_model_for_weight_conversion" in res.stderr, res.stderr
        assert "format" in res.stdout + res.stderr  # the check report is shown first
    res = run_cli(["--home", home, "install", raw, "--onto", pico_llama, "--out", out_dir, "--force"])
    assert res.code == 6 and "path_initial_model_for_weight_conversion" in res.stderr, res.stderr
    assert not out_dir.exists()

    # converted: a plain LoRA (rank 2r) relative to θ; installs bit-identically to PEFT
    layout = read_adapter(converted)
    assert layout.config.init_lora_weights is True and layout.config.r == 8
    out = execute_merge(plan_merge(layout, pico_llama), tmp_path / "out", provenance={}).out_dir
    ours = Reference.load_dir_tensors(out)
    reference = Reference.peft_merged_state_dict(pico_llama, converted, torch.float32)
    for name, tensor in ours.items():
        assert torch.equal(tensor, reference[name]), name
    # and computes what the trained PiSSA model computed
    torch.testing.assert_close(Reference.model_logits(out, IDS), trained_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("init", ["eva", "orthogonal", "gaussian", False])
def test_inits_that_leave_the_base_alone_install(
    init: object, pico_llama: Path, llama_adapter: Path, tmp_path: Path
) -> None:
    adapter = tmp_path / "ad"
    shutil.copytree(llama_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["init_lora_weights"] = init
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    out = execute_merge(plan_merge(read_adapter(adapter), pico_llama), tmp_path / "out", provenance={}).out_dir
    torch.testing.assert_close(
        Reference.model_logits(out, IDS), Reference.peft_logits(pico_llama, adapter, IDS), atol=2e-5, rtol=1e-4
    )


@pytest.mark.parametrize("init", ["pissa_niter_4", "corda", "lora_ga", "loftq", "some_future_init"])
def test_other_base_rewriting_or_unknown_inits_refused(init: str, llama_adapter: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "ad"
    shutil.copytree(llama_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["init_lora_weights"] = init
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedError, match=f"init_lora_weights='{init}'"):
        read_adapter(adapter)
