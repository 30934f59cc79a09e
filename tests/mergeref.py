"""Shared by the merge tests: the LoRA variants and base dtypes under test, and PEFT's
``merge_and_unload`` as the reference implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import picomodels
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: variant name -> (model kind, make_adapter kwargs)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("llama", {"target_modules": picomodels.LLAMA_LINEAR}),
    "rslora": ("llama", {"r": 3, "lora_alpha": 7, "use_rslora": True, "target_modules": ["q_proj", "down_proj"]}),
    "patterns": (
        "llama",
        {
            "r": 4,
            "target_modules": ["q_proj", "v_proj", "down_proj"],
            "rank_pattern": {"q_proj": 2, "layers.1.mlp.down_proj": 6},
            "alpha_pattern": {"v_proj": 3},
        },
    ),
    "fan_in_fan_out": ("gpt2", {"target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True}),
    "embedding": ("llama", {"target_modules": ["embed_tokens", "q_proj"]}),
    "modules_to_save": ("llama", {"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}),
    "tied_lm_head_saved": (
        "gpt2",
        {"target_modules": ["c_attn"], "fan_in_fan_out": True, "modules_to_save": ["lm_head"]},
    ),
    "tied_wte_saved": ("gpt2", {"target_modules": ["c_attn"], "fan_in_fan_out": True, "modules_to_save": ["wte"]}),
    "tied_lm_head_lora": ("gpt2", {"target_modules": ["c_attn", "lm_head"], "fan_in_fan_out": True}),
    "bias_all": ("gpt2", {"target_modules": ["c_attn"], "fan_in_fan_out": True, "bias": "all"}),
    "bias_lora_only": ("gpt2", {"target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True, "bias": "lora_only"}),
    "lora_bias": ("gpt2", {"target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True, "lora_bias": True}),
}

#: tensors where we deliberately differ from merge_and_unload: with LoRA on a tied lm_head, PEFT
#: adds the delta to the shared tensor, changing the input embedding too; we untie and leave the
#: embedding as it was (so the merged model computes what PeftModel computes)
DIVERGES_FROM_MERGE_AND_UNLOAD = {"tied_lm_head_lora": {"transformer.wte.weight"}}


class Reference:
    """PEFT as the reference implementation, and loading helpers."""

    @staticmethod
    def peft_merged_state_dict(base: Path, adapter: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """PEFT's documented path: from_pretrained -> PeftModel.from_pretrained -> merge_and_unload."""
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        return dict(merged.state_dict())

    @staticmethod
    def load_dir_tensors(path: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        out: dict[str, torch.Tensor] = {}
        for f in sorted(path.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    @staticmethod
    def peft_logits(base: Path, adapter: Path, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), adapter).eval()
        with torch.no_grad():
            return model(ids).logits

    @staticmethod
    def model_logits(path: Path, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        with torch.no_grad():
            return model(ids).logits
