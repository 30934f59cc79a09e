"""LoRA on the head and/or the input embedding of tied-embedding bases (Llama with
``tie_word_embeddings``, GPT-2, Gemma), installed onto θ′: the output is θ′ + Δθ and nothing of θ.

PEFT saves θ's embedding/head inside such adapters (``<m>.base_layer.weight``, default
``save_embedding_layers="auto"``); those copies are never written. The reference is ``PeftModel``
on θ′ with the same adapter saved with ``save_embedding_layers=False``, tensor by tensor (PEFT's
merge on an untied θ′) and by logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import picomodels
import picozoo
import pytest
import torch
from mergeref import Reference

from patchctl.adapter import read_adapter
from patchctl.bases import read_local_base
from patchctl.checks import run_checks
from patchctl.merge import execute_merge, plan_merge

IDS = torch.tensor([[1, 5, 9, 23, 42, 7, 3, 77]])
KINDS = ("llama-tied", "gpt2", "gemma")
HEAD = {"llama-tied": ["lm_head"], "gpt2": ["lm_head"], "gemma": ["lm_head"]}
EMBEDDING = {"llama-tied": ["embed_tokens"], "gpt2": ["wte"], "gemma": ["embed_tokens"]}
SIDES = {"head": HEAD, "embedding": EMBEDDING, "both": {k: HEAD[k] + EMBEDDING[k] for k in KINDS}}


@pytest.fixture(scope="module")
def tied_bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """kind -> (θ, θ′)."""
    root = tmp_path_factory.mktemp("tied")
    out = {}
    for kind in KINDS:
        theta = picozoo.make_base(root / f"{kind}-theta", kind)
        out[kind] = (theta, picomodels.make_updated_base(theta, root / f"{kind}-theta-prime", scale=0.05))
    return out


def _untied_peft_merge(base: Path, adapter: Path, kind: str) -> dict[str, torch.Tensor]:
    """PEFT's own arithmetic on θ′ with the head given its own tensor (so a one-sided delta stays one-sided)."""
    from peft import PeftModel

    model = picozoo.model_class(kind).from_pretrained(base)
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    assert model.get_input_embeddings().weight.data_ptr() != head.weight.data_ptr()
    return dict(PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict())


@pytest.mark.parametrize("side", list(SIDES))
@pytest.mark.parametrize("kind", KINDS)
def test_tied_embedding_lora_installs_theta_prime_plus_delta(
    kind: str, side: str, tied_bases: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    theta, theta_prime = tied_bases[kind]
    targets = SIDES[side][kind] + (["c_attn"] if kind == "gpt2" else ["q_proj"])
    saved = picozoo.make_adapter(theta, tmp_path / "default", kind, target_modules=targets)
    clean = picozoo.make_adapter(theta, tmp_path / "clean", kind, target_modules=targets, save_embedding_layers=False)
    carried = read_adapter(saved).carried_base_layers
    # PEFT saves θ's tensors when a target is named like one of its EMBEDDING_LAYER_NAMES (not GPT-2's wte)
    assert bool(carried) == bool({"lm_head", "embed_tokens"} & set(targets))

    checks = run_checks(read_adapter(saved), read_local_base(theta_prime), only=["format", "coverage", "shapes"])
    assert [r.status for r in checks.results] == ["pass"] * 3, [r.detail for r in checks.results]
    plan = plan_merge(read_adapter(saved), theta_prime)
    assert plan.config_changes == {"tie_word_embeddings": False}
    out = execute_merge(plan, tmp_path / "out", provenance={}).out_dir
    ours = Reference.load_dir_tensors(out)
    expected = _untied_peft_merge(theta_prime, clean, kind)
    prime = Reference.load_dir_tensors(theta_prime)
    for name, tensor in ours.items():
        assert torch.equal(tensor, expected[name]), f"{kind}/{side}: {name} differs from PeftModel on θ′"
    head = "lm_head.weight"
    embedding = next(n for n in ours if n.endswith(("embed_tokens.weight", "wte.weight")))
    # only the patched side changed; the other is θ′'s shared matrix, not θ's copy
    assert torch.equal(ours[head], prime[embedding]) == (side == "embedding")
    assert torch.equal(ours[embedding], prime[embedding]) == (side == "head")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False

    merged = Reference.model_logits(out, IDS)
    with_adapter = Reference.peft_logits(theta_prime, clean, IDS)
    torch.testing.assert_close(merged, with_adapter, atol=2e-5, rtol=1e-4)


def test_carried_base_layer_is_not_written_on_an_untied_base(pico_llama: Path, tmp_path: Path) -> None:
    """An untied Llama with an embedding LoRA: the adapter carries θ's embed_tokens; θ′ keeps its own."""
    theta_prime = picomodels.make_updated_base(pico_llama, tmp_path / "prime", scale=0.05)
    saved = picomodels.make_adapter(pico_llama, tmp_path / "ad", target_modules=["embed_tokens", "q_proj"])
    layout = read_adapter(saved)
    assert [r.target for r in layout.carried_base_layers] == ["model.embed_tokens.weight"]
    plan = plan_merge(layout, theta_prime)
    assert any("not written" in n for n in plan.notes)
    out = execute_merge(plan, tmp_path / "out", provenance={}).out_dir
    ours = Reference.load_dir_tensors(out)
    prime = Reference.load_dir_tensors(theta_prime)
    theta = Reference.load_dir_tensors(pico_llama)
    emb = "model.embed_tokens.weight"
    # θ′ + Δ: the difference to θ′ is the LoRA delta, not θ′ - θ
    delta = ours[emb] - prime[emb]
    assert (delta - (theta[emb] - prime[emb])).abs().max() > 1e-3
    with_adapter = Reference.peft_logits(theta_prime, _resaved_without_embeddings(saved, tmp_path / "clean"), IDS)
    torch.testing.assert_close(Reference.model_logits(out, IDS), with_adapter, atol=2e-5, rtol=1e-4)


def _resaved_without_embeddings(adapter: Path, out: Path) -> Path:
    """The same adapter with the carried base_layer tensors dropped (= save_embedding_layers=False)."""
    import shutil

    from safetensors.torch import load_file, save_file

    out.mkdir()
    shutil.copy(adapter / "adapter_config.json", out / "adapter_config.json")
    tensors = {k: v for k, v in load_file(adapter / "adapter_model.safetensors").items() if ".base_layer." not in k}
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    return out


def test_rebased_adapter_leaves_out_the_copies_of_theta(
    tied_bases: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """``--format adapter``: the rebased adapter has no ``base_layer`` copies, so PeftModel on θ′ with it
    computes θ′ + Δθ (with them it would compute on θ's embedding)."""
    from safetensors import safe_open

    from patchctl.merge import write_rebased_adapter

    theta, theta_prime = tied_bases["llama-tied"]
    saved = picozoo.make_adapter(theta, tmp_path / "ad", "llama-tied", target_modules=["lm_head", "embed_tokens"])
    rebased = write_rebased_adapter(
        read_adapter(saved), tmp_path / "rebased", base_model_name_or_path=str(theta_prime), revision=None,
        provenance={},
    ).out_dir  # fmt: skip
    with safe_open(rebased / "adapter_model.safetensors", "pt") as f:
        keys = set(f.keys())
    with safe_open(saved / "adapter_model.safetensors", "pt") as f:
        saved_keys = set(f.keys())
        assert keys == {k for k in saved_keys if not k.endswith(".base_layer.weight")} != saved_keys
        for k in keys:
            assert torch.equal(f.get_tensor(k), _tensor(rebased, k))
    merged = execute_merge(plan_merge(read_adapter(saved), theta_prime), tmp_path / "out", provenance={}).out_dir
    torch.testing.assert_close(
        Reference.peft_logits(theta_prime, rebased, IDS), Reference.model_logits(merged, IDS), atol=2e-5, rtol=1e-4
    )


def _tensor(adapter: Path, key: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        return f.get_tensor(key)
