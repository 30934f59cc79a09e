"""Fixtures for the merge engine: pico bases in each dtype, adapters for each LoRA variant, and
PEFT's ``merge_and_unload`` as the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import picomodels
import pytest
from mergeref import DTYPES, VARIANTS, Reference


@pytest.fixture(scope="session")
def make_typed_base(models_dir: Path) -> Callable[[str, str], Path]:
    """``(kind, dtype name) -> base dir``: the same pico weights saved in fp32, fp16 or bf16."""
    cache: dict[tuple[str, str], Path] = {}

    def get(kind: str, dtype: str) -> Path:
        if (kind, dtype) not in cache:
            cache[(kind, dtype)] = picomodels.make_base(models_dir / f"merge-{kind}-{dtype}", kind, dtype=DTYPES[dtype])
        return cache[(kind, dtype)]

    return get


@pytest.fixture(scope="session")
def make_variant_adapter(models_dir: Path, make_typed_base: Callable[[str, str], Path]) -> Callable[[str], Path]:
    """``variant -> adapter dir``, trained (randomly) on the fp32 base of its kind."""
    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            kind, kwargs = VARIANTS[variant]
            cache[variant] = picomodels.make_adapter(
                make_typed_base(kind, "fp32"), models_dir / f"merge-adapter-{variant}", **kwargs
            )
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def make_saved_adapter(models_dir: Path, make_variant_adapter: Callable[[str], Path]) -> Callable[..., Path]:
    """``(variant, dtype name) -> adapter dir``: the variant's adapter as saved by a user who trained in
    that dtype (every tensor of adapter_model.safetensors cast to it; PEFT upcasts LoRA weights to fp32
    when loading, and casts modules_to_save copies to the base dtype)."""
    import shutil

    from safetensors.torch import load_file, save_file

    cache: dict[tuple[str, str, bool], Path] = {}

    def get(variant: str, dtype: str, clean: bool = False) -> Path:
        """``clean``: without the copies of θ's embedding/head (``*.base_layer.weight``), i.e. as saved
        with ``save_embedding_layers=False`` — the reference the install must equal."""
        src = make_variant_adapter(variant)
        if dtype == "fp32" and not clean:
            return src
        if (variant, dtype, clean) not in cache:
            out = models_dir / f"merge-adapter-{variant}-saved-{dtype}{'-clean' if clean else ''}"
            out.mkdir()
            shutil.copy(src / "adapter_config.json", out / "adapter_config.json")
            tensors = load_file(src / "adapter_model.safetensors")
            save_file(
                {
                    k: v.to(DTYPES[dtype]).contiguous()
                    for k, v in tensors.items()
                    if not (clean and k.endswith(".base_layer.weight"))
                },
                out / "adapter_model.safetensors",
                metadata={"format": "pt"},
            )
            cache[(variant, dtype, clean)] = out
        return cache[(variant, dtype, clean)]

    return get


@pytest.fixture(scope="session")
def ref() -> type[Reference]:
    return Reference
