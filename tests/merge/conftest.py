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
def ref() -> type[Reference]:
    return Reference
