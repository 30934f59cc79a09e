"""Fixtures for the compatibility checks: extra pico bases and adapters (session-scoped), a
manifest built from a base's facts, and helpers that copy a model directory and edit its
tensors or config (to build patch/base pairs that trip one check each)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import picomodels
import pytest
import torch

from patchctl import __version__
from patchctl._fs import sha256_file
from patchctl.bases import read_local_base
from patchctl.checks import read_adapter_for_checks, run_checks
from patchctl.schemas import BaseFacts, CompatReport, FileEntry, Manifest, SourceBase

Tensors = dict[str, torch.Tensor]
_UNSET: Any = object()


def manifest_for(
    adapter_dir: Path, source: BaseFacts, *, tokenizer_sha256: str | None = _UNSET, tokenizer: Any = _UNSET
) -> Manifest:
    """The patch.json a push of ``adapter_dir`` trained on ``source`` would write."""
    layout = read_adapter_for_checks(adapter_dir)
    files = [
        FileEntry(path=p.name, sha256=sha256_file(p), size=p.stat().st_size)
        for p in sorted(adapter_dir.iterdir())
        if p.is_file()
    ]
    return Manifest(
        name="acme/test-patch",
        version="1.0.0",
        task="test",
        created_at=datetime.now(timezone.utc),
        patchctl_version=__version__,
        lora=layout.lora_spec(),
        source_base=SourceBase(
            repo=source.source,
            revision=source.revision,
            weights_sha256=source.weights_sha256,
            structure_sha256=source.structure_sha256,
            family=source.family,
            tokenizer_sha256=source.tokenizer_sha256 if tokenizer_sha256 is _UNSET else tokenizer_sha256,
            tokenizer=source.tokenizer if tokenizer is _UNSET else tokenizer,
        ),
        files=tuple(files),
    )


def edit_model_dir(
    src: Path,
    dst: Path,
    *,
    tensors: Callable[[Tensors], Tensors] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Copy ``src`` (a base or an adapter directory) to ``dst``; rewrite its single safetensors
    file through ``tensors`` and merge ``config`` into its config (a None value deletes a key)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if tensors is not None:
        (weights,) = [p for p in dst.glob("*.safetensors")]
        new = {k: v.contiguous() for k, v in tensors(load_file(weights)).items()}
        save_file(new, weights, metadata={"format": "pt"})
    if config is not None:
        cfg_path = dst / ("adapter_config.json" if (dst / "adapter_config.json").is_file() else "config.json")
        cfg = json.loads(cfg_path.read_text())
        for key, value in config.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        cfg_path.write_text(json.dumps(cfg))
    return dst


class Check(Protocol):
    def __call__(
        self, adapter: Path, base: Path, *, source: Path | None = ..., ancestors: tuple[str, ...] = ...
    ) -> CompatReport: ...


@pytest.fixture
def check() -> Check:
    """Run every check of ``adapter`` onto ``base``; with ``source`` the patch gets a manifest
    saying it was trained on that base directory."""

    def run(adapter: Path, base: Path, *, source: Path | None = None, ancestors: tuple[str, ...] = ()) -> CompatReport:
        manifest = manifest_for(adapter, read_local_base(source)) if source is not None else None
        return run_checks(
            read_adapter_for_checks(adapter), read_local_base(base), manifest=manifest, target_ancestors=ancestors
        )

    return run


@pytest.fixture(scope="session")
def llama_updated(models_dir: Path, pico_llama: Path) -> Path:
    """θ′: the pico Llama plus a small perturbation (a provider's new release)."""
    return picomodels.make_updated_base(pico_llama, models_dir / "pico-llama-v2")


@pytest.fixture(scope="session")
def llama_other(models_dir: Path) -> Path:
    """An unrelated pico Llama (other seed): same structure, other weights."""
    return picomodels.make_base(models_dir / "pico-llama-other", "llama", seed=3)


@pytest.fixture(scope="session")
def llama_3layers(models_dir: Path) -> Path:
    return picomodels.make_base(models_dir / "pico-llama-3l", "llama", layers=3)


@pytest.fixture(scope="session")
def llama_vocab128(models_dir: Path) -> Path:
    return picomodels.make_base(models_dir / "pico-llama-v128", "llama", vocab=128)


@pytest.fixture(scope="session")
def llama_bf16(models_dir: Path) -> Path:
    return picomodels.make_base(models_dir / "pico-llama-bf16", "llama", dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def llama_bf16_adapter(models_dir: Path, llama_bf16: Path) -> Path:
    return picomodels.make_adapter(llama_bf16, models_dir / "llama-bf16-lora")


@pytest.fixture(scope="session")
def llama_3layers_adapter(models_dir: Path, llama_3layers: Path) -> Path:
    return picomodels.make_adapter(llama_3layers, models_dir / "llama-3l-lora")


@pytest.fixture(scope="session")
def dora_adapter(models_dir: Path, pico_llama: Path) -> Path:
    return picomodels.make_adapter(pico_llama, models_dir / "llama-dora", use_dora=True)


@pytest.fixture(scope="session")
def embed_adapter(models_dir: Path, pico_llama: Path) -> Path:
    """LoRA on the input embeddings (lora_embedding_A/B) and q_proj."""
    return picomodels.make_adapter(
        pico_llama, models_dir / "llama-embed-lora", target_modules=["q_proj", "embed_tokens"]
    )


@pytest.fixture(scope="session")
def lm_head_adapter(models_dir: Path, pico_llama: Path) -> Path:
    """q_proj/v_proj LoRA plus a trained copy of lm_head (modules_to_save)."""
    return picomodels.make_adapter(pico_llama, models_dir / "llama-lmhead-lora", modules_to_save=["lm_head"])


@pytest.fixture(scope="session")
def gpt2_bias_adapter(models_dir: Path, pico_gpt2: Path) -> Path:
    """LoRA with a trained lora_B bias (lora_bias=True) on GPT-2's c_attn (fan_in_fan_out)."""
    return picomodels.make_adapter(
        pico_gpt2, models_dir / "gpt2-bias-lora", target_modules=["c_attn"], fan_in_fan_out=True, lora_bias=True
    )


@pytest.fixture(scope="session")
def llama_bias_adapter(models_dir: Path, pico_llama: Path) -> Path:
    """lora_bias=True on Llama's q_proj, which has no bias in the base."""
    return picomodels.make_adapter(
        pico_llama, models_dir / "llama-bias-lora", target_modules=["q_proj"], lora_bias=True
    )


@pytest.fixture
def make_manifest() -> Callable[..., Manifest]:
    return manifest_for


@pytest.fixture
def edit_dir() -> Callable[..., Path]:
    return edit_model_dir
