"""A text model's patch installs onto its multimodal wrapper (language-model tensors under
``model.language_model.``): the checks map the prefix and the merge writes the same values."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from patchctl.installer import install
from patchctl.settings import Settings


def test_text_patch_merges_onto_the_wrapper(edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path) -> None:
    cfg = json.loads((pico_llama / "config.json").read_text())
    wrapper = {"model_type": "mistral3", "architectures": ["Mistral3ForConditionalGeneration"], "text_config": cfg}

    def rename(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            (k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k): v for k, v in t.items()
        }

    wrapped = edit_dir(pico_llama, tmp_path / "wrapped", tensors=rename)
    (wrapped / "config.json").write_text(json.dumps(wrapper))
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'catalog.db'}")
    text_out = install(settings, str(llama_adapter), onto=str(pico_llama), out=tmp_path / "text", progress=False)
    wrap_out = install(settings, str(llama_adapter), onto=str(wrapped), out=tmp_path / "wrap", progress=False)
    assert text_out.check.report.status == wrap_out.check.report.status == "warn"  # no manifest: source unknown
    text = load_file(tmp_path / "text" / "model.safetensors")
    wrap = load_file(tmp_path / "wrap" / "model.safetensors")
    assert set(wrap) == set(rename(dict(text)))
    for name, value in text.items():
        assert torch.equal(wrap[next(iter(rename({name: value})))], value), name
    q0 = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(text[q0], load_file(pico_llama / "model.safetensors")[q0])  # the patch was applied
