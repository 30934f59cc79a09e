"""The model card: Hub metadata the server's (Hub-like) validator accepts, and the body."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hubserver import HubServer
from hubserver.server import split_front_matter, validate_card_metadata
from remotes.helpers import PATCH_NAME, make_manifest

from patchctl.remotes import HfHubRemote, model_card
from patchctl.remotes._card import hub_base_model
from patchctl.schemas import EvalResult


def _meta(card: str) -> dict[str, object]:
    text, _ = split_front_matter(card)
    assert text is not None
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_card_metadata(llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    card = model_card(manifest)
    meta, errors = validate_card_metadata(card)
    assert errors == []
    assert meta["base_model"] == "acme/pico-llama"
    assert meta["base_model_relation"] == "adapter"
    assert meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0"
    assert meta["tags"] == ["patchctl", "lora", "sst2", "llama"]
    assert meta["patchctl"] == {
        "name": PATCH_NAME,
        "version": "1.0.0",
        "task": "sst2",
        "model_type": "llama",
        "content_digest": manifest.content_digest,
    }


def test_card_body_has_task_lineage_ranks_compat_and_evals(llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    report = {
        "base": "hf://acme/pico-llama-v2",
        "verdict": "warn",
        "checks": [{"name": "drift", "status": "warn", "detail": "q_proj drift 3.1% | high"}],
    }
    evals = [EvalResult(task="sst2", metric="accuracy", value=0.912, n=200, base_weights_sha256="a" * 64)]
    _, body = split_front_matter(model_card(manifest, compat_reports=[report], evals=evals))
    assert "## Task\n\nsst2" in body
    assert manifest.source_base.weights_sha256 in body and manifest.source_base.structure_sha256 in body
    assert "Rank r = 4, alpha = 8" in body
    assert "| drift | warn | q_proj drift 3.1% \\| high |" in body  # cell text escaped
    assert "| sst2 | accuracy | 0.912 | 200 | aaaaaaaaaaaa… |" in body
    for f in manifest.files:
        assert f.sha256 in body


def test_local_base_has_no_base_model(llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama, base_repo=str(pico_llama))
    meta, errors = validate_card_metadata(model_card(manifest))
    assert errors == []
    assert "base_model" not in meta and "base_model_relation" not in meta


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("gpt2", "gpt2"),
        ("hf://org/base@v2", "org/base"),
        ("/models/llama", None),
        ("./models/llama", None),
        ("~/llama", None),
        ("org/../x", None),
    ],
)
def test_hub_base_model(repo: str, expected: str | None) -> None:
    assert hub_base_model(repo) == expected


def test_published_card_is_what_the_hub_indexes(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    from huggingface_hub import HfApi

    HfHubRemote(PATCH_NAME, endpoint=hub.url).publish(make_manifest(llama_adapter, pico_llama), llama_adapter)
    info = HfApi(endpoint=hub.url).model_info(PATCH_NAME)
    assert info.card_data is not None
    assert info.card_data.base_model == "acme/pico-llama"
    assert info.library_name == "peft"
    assert info.tags is not None and {"patchctl", "lora", "sst2", "base_model:adapter:acme/pico-llama"} <= set(
        info.tags
    )
