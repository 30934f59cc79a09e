"""The source base's family details and token-id fingerprint in patch.json: optional (older
manifests load), and round-tripped exactly (integer keys of added tokens included)."""

from __future__ import annotations

import json
from pathlib import Path

from patchctl.bases import read_local_base
from patchctl.schemas.manifest import SourceBase


def test_old_source_base_loads_without_the_new_facts() -> None:
    old = {
        "repo": "acme/base",
        "weights_sha256": "a" * 64,
        "structure_sha256": "b" * 64,
        "family": {"model_type": "llama", "hidden_size": 32},
        "tokenizer_sha256": "c" * 64,
    }
    sb = SourceBase.model_validate(old)
    assert sb.family.details is None and sb.tokenizer is None


def test_new_facts_round_trip(pico_llama: Path) -> None:
    facts = read_local_base(pico_llama)
    assert facts.tokenizer is not None and facts.family.details is not None
    sb = SourceBase(
        repo="acme/base",
        weights_sha256=facts.weights_sha256,
        structure_sha256=facts.structure_sha256,
        family=facts.family,
        tokenizer=facts.tokenizer,
    )
    text = json.dumps(sb.model_dump(mode="json"))
    back = SourceBase.model_validate(json.loads(text))
    assert back == sb
    assert back.family.details is not None and back.family.details.num_key_value_heads == 2


def test_added_tokens_keep_integer_ids_through_json() -> None:
    from patchctl.schemas.base import TokenizerFacts

    t = TokenizerFacts(kind="sentencepiece", num_tokens=6, vocab_sha256="d" * 64, added_tokens_sha256="e" * 64,
                       added_tokens={5: "<x>"}, special_tokens={"eos": 5})  # fmt: skip
    back = TokenizerFacts.model_validate(json.loads(json.dumps(t.model_dump(mode="json"))))
    assert back == t and back.added_tokens == {5: "<x>"}
