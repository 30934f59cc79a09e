"""More pico architectures for the merge tests (beside :mod:`picomodels`): a tied-embedding
Llama, Gemma, T5 (``_keep_in_fp32_modules``), Mixtral, Qwen3-MoE and gpt-oss (3-D expert parameters),
and adapters saved the ways PEFT users save them (``save_embedding_layers``, adapter dtype).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import picomodels
import torch


def pico_config(kind: str) -> Any:
    """A tiny transformers config of ``kind``."""
    from transformers import GemmaConfig, GptOssConfig, MixtralConfig, Qwen3MoeConfig, T5Config

    small: dict[str, Any] = {"vocab_size": picomodels.VOCAB, "max_position_embeddings": 64}
    if kind == "llama-tied":
        return picomodels._config("llama", tie=True)
    if kind == "gpt2":
        return picomodels._config("gpt2")
    if kind == "gemma":
        return GemmaConfig(
            **small, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
            eos_token_id=2,
        )  # fmt: skip
    if kind == "t5":
        return T5Config(
            vocab_size=picomodels.VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        )  # fmt: skip
    if kind == "mixtral":
        return MixtralConfig(
            **small, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        )  # fmt: skip
    if kind == "qwen3moe":
        return Qwen3MoeConfig(
            **small, hidden_size=32, intermediate_size=64, moe_intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, head_dim=8,
        )  # fmt: skip
    if kind == "gptoss":  # fused 3-D experts on disk, stored (experts, in, out)
        return GptOssConfig(
            **small, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )  # fmt: skip
    raise ValueError(kind)


def model_class(kind: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if kind == "t5" else AutoModelForCausalLM


def make_base(out: Path, kind: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Save a pico base of ``kind`` (random weights, every tensor perturbed) with a tokenizer."""
    torch.manual_seed(seed)
    model = model_class(kind).from_config(pico_config(kind))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model = model.to(dtype).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    picomodels.write_tokenizer(out, picomodels.VOCAB)
    return out


def make_adapter(
    base: Path,
    out: Path,
    kind: str,
    *,
    seed: int = 1,
    scale: float = 0.05,
    save_dtype: torch.dtype | None = None,
    save_embedding_layers: bool | str = "auto",
    **lora: Any,
) -> Path:
    """A PEFT LoRA adapter with random non-zero A and B, saved as PEFT saves it (optionally cast
    to ``save_dtype`` first, as a user training in bf16/fp16 saves it)."""
    from peft import LoraConfig, get_peft_model

    model = model_class(kind).from_pretrained(base)
    lora.setdefault("r", 4)
    lora.setdefault("lora_alpha", 8)
    peft_model = get_peft_model(model, LoraConfig(**lora))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * scale)
    if save_dtype is not None:
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.data = p.data.to(save_dtype)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out, save_embedding_layers=save_embedding_layers)
    return out
