"""Inputs of the bad-input corpus: the pico models each case starts from."""

from __future__ import annotations

from pathlib import Path

import picomodels
import pytest


@pytest.fixture(scope="session")
def corpus_models(
    models_dir: Path, pico_llama: Path, pico_llama_sharded: Path, pico_gpt2: Path, llama_adapter: Path
) -> dict[str, Path]:
    """Every starting point a case may name (``"adapter"`` / ``"base"`` in its case.json)."""
    from peft import IA3Config, LoKrConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def peft_dir(name: str, config: object) -> Path:
        out = models_dir / f"corpus-{name}"
        if not out.exists():
            model = get_peft_model(AutoModelForCausalLM.from_pretrained(pico_llama), config)  # type: ignore[arg-type]
            model.save_pretrained(out)
        return out

    return {
        "llama": pico_llama,
        "llama_sharded": pico_llama_sharded,
        "gpt2": pico_gpt2,
        "llama_vocab128": picomodels.make_base(models_dir / "corpus-llama-vocab128", "llama", vocab=128),
        "lora": llama_adapter,
        "lora_embed": picomodels.make_adapter(
            pico_llama, models_dir / "corpus-lora-embed", target_modules=["embed_tokens", "q_proj"]
        ),
        "dora": picomodels.make_adapter(pico_llama, models_dir / "corpus-dora", use_dora=True),
        "ia3": peft_dir(
            "ia3", IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
        ),
        "lokr": peft_dir("lokr", LoKrConfig(r=4, target_modules=["q_proj", "v_proj"])),
    }
