"""Tiny real models and PEFT adapters, generated on the fly (no Hub access).

``make_base`` saves a randomly initialised transformers model (pico Llama or pico GPT-2) with
safetensors; ``make_adapter`` wraps it with ``peft.get_peft_model`` and sets every LoRA B (and
embedding B) to non-zero values so the patch changes the model; ``make_updated_base`` writes θ′
(θ plus a small perturbation, same sharding) as a provider's new release would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCAB = 96


def _config(kind: str, *, vocab: int = VOCAB, tie: bool | None = None, layers: int = 2) -> Any:
    from transformers import GPT2Config, LlamaConfig

    if kind == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=bool(tie),
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    if kind == "gpt2":
        return GPT2Config(
            vocab_size=vocab,
            n_embd=32,
            n_layer=layers,
            n_head=4,
            n_positions=64,
            tie_word_embeddings=True if tie is None else tie,
            bos_token_id=1,
            eos_token_id=2,
        )
    raise ValueError(kind)


def make_model(kind: str = "llama", *, seed: int = 0, dtype: torch.dtype = torch.float32, **cfg: Any) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(kind, **cfg))
    # non-trivial biases/norms so that every tensor is distinguishable
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.to(dtype).eval()


def write_tokenizer(out: Path, vocab: int = VOCAB, *, salt: str = "") -> None:
    """A real (word-level) tokenizers tokenizer.json plus tokenizer_config.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}{salt}" for i in range(vocab - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 64}), encoding="utf-8"
    )


def make_base(
    out: Path,
    kind: str = "llama",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | int | None = None,
    tokenizer: bool = True,
    **cfg: Any,
) -> Path:
    """Save a pico base model directory (config.json + safetensors [+ index] + tokenizer)."""
    model = make_model(kind, seed=seed, dtype=dtype, **cfg)
    out.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(out, **kwargs)
    if tokenizer:
        write_tokenizer(out, model.config.vocab_size)
    return out


def make_adapter(base: Path, out: Path, *, seed: int = 1, b_scale: float = 0.05, **lora: Any) -> Path:
    """A PEFT LoRA adapter on ``base`` with random non-zero B matrices, saved as safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    lora.setdefault("r", 4)
    lora.setdefault("lora_alpha", 8)
    lora.setdefault("target_modules", ["q_proj", "v_proj"])
    lora.setdefault("task_type", "CAUSAL_LM")
    peft_model = get_peft_model(model, LoraConfig(**lora))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name or "lora_A" in name or "lora_embedding_A" in name:
                p.copy_(torch.randn_like(p) * b_scale)
            elif "modules_to_save" in name or (p.requires_grad and "lora" not in name):
                p.add_(torch.randn_like(p) * b_scale)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    return out


def make_updated_base(base: Path, out: Path, *, seed: int = 7, scale: float = 0.01) -> Path:
    """θ′: every floating tensor of ``base`` plus small noise, same files, sharding and dtype."""
    import shutil

    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for f in sorted(base.iterdir()):
        if f.suffix == ".safetensors":
            tensors = load_file(f)
            new = {}
            for name, t in tensors.items():
                if t.is_floating_point():
                    noise = torch.randn(t.shape, generator=gen, dtype=torch.float32) * scale
                    t = (t.float() + noise).to(t.dtype)
                new[name] = t.contiguous()
            save_file(new, out / f.name, metadata={"format": "pt"})
        elif f.is_file():
            shutil.copy2(f, out / f.name)
    return out
