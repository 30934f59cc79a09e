"""Real releases as test data: for each consecutive pair of public releases in
``../shared/realconfigs`` (verbatim config.json files), a patch trained on a pico base built from
the older config is checked against a pico base built from the newer one. The verdict a user
needs, with the reason, is in ``realconfig_pairs.json`` next to this file."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from patchctl.schemas import CompatReport

REPO_ROOT = Path(__file__).resolve().parents[2]
#: CI puts a copy of shared/ beside the clone, as here
REALCONFIGS = REPO_ROOT.parent / "shared" / "realconfigs"
PAIRS = json.loads((Path(__file__).with_name("realconfig_pairs.json")).read_text(encoding="utf-8"))

#: sizes divided by 32 (every real hidden, MLP and head size is a multiple of 32)
_DIV32 = ("hidden_size", "intermediate_size", "head_dim", "query_pre_attn_scalar")
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
_BASE_WORDS = 40
#: keys the pico model is built without (only the written config.json keeps them): they do not
#: change tensor shapes, and pico sizes would fail their validation (longrope factors per head dim)
_BUILD_WITHOUT = ("rope_scaling", "rope_parameters", "auto_map", "_name_or_path", "sliding_window", "torch_dtype")


def _realconfigs() -> Path:
    if not (REALCONFIGS / "chains.json").is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{REALCONFIGS} is missing: CI must put a copy of shared/ beside the clone")
        pytest.skip(f"{REALCONFIGS} not found (shared/ beside the repository)")
    return REALCONFIGS


def _all_configs(root: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.parent.relative_to(root)): json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(root.glob("**/config.json"))
    }


def _ranks(values: set[int], start: int, step: int) -> dict[int, int]:
    return {v: start + step * i for i, v in enumerate(sorted(values))}


def pico_config(real: dict[str, Any], everything: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``real`` with every key kept and its sizes made tiny; equal values in two releases stay
    equal, different ones stay different (layer counts, vocabulary sizes, large token ids by rank)."""
    layers = _ranks({c["num_hidden_layers"] for c in everything.values()}, 1, 1)
    vocabs = _ranks({c["vocab_size"] for c in everything.values()}, 72, 8)
    big_ids: set[int] = set()
    for c in everything.values():
        for key in _TOKEN_ID_KEYS:
            v = c.get(key)
            big_ids.update(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, int) and x >= 48)
    ids = _ranks(big_ids, 48, 1)
    out = dict(real)
    for key in _DIV32:
        if isinstance(real.get(key), int):
            assert real[key] % 32 == 0, (key, real[key])
            out[key] = real[key] // 32
    if real.get("max_window_layers") == real["num_hidden_layers"]:
        out["max_window_layers"] = layers[real["num_hidden_layers"]]
    out["num_hidden_layers"] = layers[real["num_hidden_layers"]]
    out["vocab_size"] = vocabs[real["vocab_size"]]
    for key in _TOKEN_ID_KEYS:
        v = real.get(key)
        if isinstance(v, list):
            out[key] = [ids.get(x, x) for x in v]
        elif isinstance(v, int):
            out[key] = ids.get(v, v)
    return out


def _targets(config: dict[str, Any], embed: bool) -> list[str]:
    attn = ["qkv_proj"] if config["model_type"] == "phi3" else ["q_proj", "v_proj"]
    return [*attn, "embed_tokens"] if embed else attn


def _write_tokenizer(out: Path, release: str, vocab_rows: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    facts = PAIRS["tokenizers"][release]
    lineage, added = facts["lineage"], facts["added"]
    words = {f"{lineage}_{i}": i for i in range(_BASE_WORDS)}
    tok = Tokenizer(models.WordLevel(words, unk_token=f"{lineage}_0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    raw = json.loads(tok.to_str())
    raw["added_tokens"] = [
        {"id": _BASE_WORDS + j, "content": f"<|{lineage}_added_{j}|>", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
        for j in range(added)
    ]  # fmt: skip
    assert _BASE_WORDS + added <= vocab_rows
    (out / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")


def _build(release: str, root: Path, out: Path, everything: dict[str, dict[str, Any]]) -> Path:
    """The pico base of ``release``: a real transformers model of the pico config's class and
    sizes, saved with safetensors, then its config.json replaced by the pico config (every real key)."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    real = json.loads((root / release / "config.json").read_text(encoding="utf-8"))
    pico = pico_config(real, everything)
    build = {k: v for k, v in pico.items() if k not in _BUILD_WITHOUT and k != "model_type"}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIG_MAPPING[pico["model_type"]](**build))
    out.mkdir(parents=True)
    model.save_pretrained(out)
    (out / "config.json").write_text(json.dumps(pico, indent=2), encoding="utf-8")
    for extra in ("tokenizer_config.json", "generation_config.json"):
        if (root / release / extra).is_file():
            (out / extra).write_bytes((root / release / extra).read_bytes())
    _write_tokenizer(out, release, pico["vocab_size"])
    return out


def _adapter(base_model: Any, config: dict[str, Any], out: Path, *, embed: bool) -> Path:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(base_model, LoraConfig(r=2, lora_alpha=4, target_modules=_targets(config, embed)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def real_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    """release → (pico base, q/v adapter, q/v + embedding adapter), for every release in a pair."""
    root = _realconfigs()
    everything = _all_configs(root)
    work = tmp_path_factory.mktemp("realconfigs")
    releases = sorted({r for p in PAIRS["pairs"] for r in (p["old"], p["new"])})
    built: dict[str, tuple[Path, Path, Path]] = {}
    for i, release in enumerate(releases):
        base = _build(release, root, work / f"base{i}", everything)
        config = json.loads((base / "config.json").read_text())
        adapters = []
        for embed in (False, True):
            model = _reload(base, config)
            adapters.append(_adapter(model, config, work / f"adapter{i}-{int(embed)}", embed=embed))
        built[release] = (base, adapters[0], adapters[1])
    return built


def _reload(base: Path, config: dict[str, Any]) -> Any:
    """The saved pico model (built from the buildable part of its config, weights from disk)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    build = {k: v for k, v in config.items() if k not in _BUILD_WITHOUT and k != "model_type"}
    model = AutoModelForCausalLM.from_config(CONFIG_MAPPING[config["model_type"]](**build))
    state = {}
    for f in sorted(base.glob("*.safetensors")):
        state.update(load_file(f))
    model.load_state_dict(state, strict=False)
    return model


def test_the_data_names_every_chain() -> None:
    """Every consecutive pair of chains.json has a row (singletons are not chains)."""
    chains = json.loads((_realconfigs() / "chains.json").read_text())
    wanted = set()
    for name, chain in chains.items():
        if name == "singletons":
            continue
        dirs = [c["dir"] if isinstance(c, dict) else c for c in chain]
        wanted.update(itertools.pairwise(dirs))
    have = {(p["old"], p["new"]) for p in PAIRS["pairs"]}
    assert wanted <= have, wanted - have
    assert all(p["reason"] for p in PAIRS["pairs"])


def _statuses(report: CompatReport) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


@pytest.mark.parametrize("pair", PAIRS["pairs"], ids=lambda p: f"{p['old']}->{p['new']}")
def test_real_release_pair(pair: dict[str, Any], real_pairs: dict[str, tuple[Path, Path, Path]], check) -> None:
    old_base, qv, embed = real_pairs[pair["old"]]
    new_base = real_pairs[pair["new"]][0]
    for kind, adapter in (("qv", qv), ("embed", embed)):
        report = check(adapter, new_base, source=old_base)
        got = _statuses(report)
        want = pair[kind]
        summary = f"{kind}: " + " | ".join(f"{r.name}={r.status}: {r.detail}" for r in report.results)
        for name in ("family", "vocab", "shapes"):
            assert got[name] == want[name], summary
        assert report.status == want["overall"], summary
        for name, parts in pair["names"].items():
            for part in parts:
                assert part in report.result(name).detail, (name, part, summary)
