from __future__ import annotations

import shutil
from pathlib import Path

import picomodels
import pytest

from patchctl.registry.db import make_engine, upgrade
from patchctl.settings import Settings


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings on a migrated catalog (SQLite file or a fresh PostgreSQL database) and an empty store."""
    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    return Settings(home=tmp_path / "home", database_url=db_url)


@pytest.fixture(scope="session")
def llama_adapter_v2(models_dir: Path, pico_llama: Path) -> Path:
    """Another LoRA adapter on the pico Llama: same layout, other values."""
    return picomodels.make_adapter(pico_llama, models_dir / "llama-lora-v2", seed=2)


@pytest.fixture(scope="session")
def pico_llama_updated(models_dir: Path, pico_llama: Path) -> Path:
    """θ′: the pico Llama plus small noise (a provider's new release)."""
    return picomodels.make_updated_base(pico_llama, models_dir / "pico-llama-v2")


def _peft_adapter(base: Path, out: Path, config: object) -> Path:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)  # type: ignore[arg-type]
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def ia3_adapter(models_dir: Path, pico_llama: Path) -> Path:
    from peft import IA3Config

    cfg = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    return _peft_adapter(pico_llama, models_dir / "llama-ia3", cfg)


@pytest.fixture(scope="session")
def lokr_adapter(models_dir: Path, pico_llama: Path) -> Path:
    from peft import LoKrConfig

    return _peft_adapter(pico_llama, models_dir / "llama-lokr", LoKrConfig(r=4, target_modules=["q_proj", "v_proj"]))


@pytest.fixture
def adapter_copy(tmp_path: Path, llama_adapter: Path) -> Path:
    """A private copy of the LoRA adapter that a test may break."""
    return Path(shutil.copytree(llama_adapter, tmp_path / "adapter-copy"))
