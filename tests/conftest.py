"""Shared fixtures: isolated patchctl home, catalog URLs (SQLite and PostgreSQL), pico models."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import picomodels
import pytest

POSTGRES_ENV = "PATCHCTL_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own PATCHCTL_HOME and HF_HOME; no Hub, no user config leaks in."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("PATCHCTL_HOME", str(home / "patchctl"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("PATCHCTL_DATABASE_URL", "PATCHCTL_REMOTE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def _postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if _in_ci():
            pytest.fail(f"{POSTGRES_ENV} must be set in CI (.ci/run starts PostgreSQL)")
        return None
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty catalog database URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL not configured (set {POSTGRES_ENV})")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"patchctl_t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def pico_llama(models_dir: Path) -> Path:
    """A pico Llama base (fp32, single file, with tokenizer)."""
    return picomodels.make_base(models_dir / "pico-llama", "llama")


@pytest.fixture(scope="session")
def pico_llama_sharded(models_dir: Path) -> Path:
    """The same pico Llama saved in several shards with a model.safetensors.index.json."""
    return picomodels.make_base(models_dir / "pico-llama-sharded", "llama", max_shard_size="40KB")


@pytest.fixture(scope="session")
def pico_gpt2(models_dir: Path) -> Path:
    """A pico GPT-2 base (Conv1D layers: fan_in_fan_out; tied embeddings)."""
    return picomodels.make_base(models_dir / "pico-gpt2", "gpt2")


@pytest.fixture(scope="session")
def llama_adapter(models_dir: Path, pico_llama: Path) -> Path:
    """A plain LoRA adapter (r=4, q_proj/v_proj) on the pico Llama."""
    return picomodels.make_adapter(pico_llama, models_dir / "llama-lora")


@pytest.fixture(scope="session")
def gpt2_adapter(models_dir: Path, pico_gpt2: Path) -> Path:
    """A LoRA adapter on GPT-2's c_attn (fan_in_fan_out=True)."""
    return picomodels.make_adapter(pico_gpt2, models_dir / "gpt2-lora", target_modules=["c_attn"], fan_in_fan_out=True)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh Hub-compatible server on 127.0.0.1 (classic LFS, no Xet); HF_ENDPOINT points at it."""
    import huggingface_hub.constants as constants
    from hubserver import HubServer

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    server = HubServer(tmp_path / "hub-storage").start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    try:
        yield server
    finally:
        server.close()
