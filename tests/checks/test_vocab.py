"""``vocab`` compares token ids (vocabulary, merges/pieces, added tokens), not tokenizer file
bytes; finds embeddings by module name; says that a carried embedding copy is not written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import picomodels
import pytest

from patchctl.bases import read_local_base
from patchctl.checks import read_adapter_for_checks, run_checks
from patchctl.tokenids import compare_tokenizers, read_local_tokenizer, sentencepiece_pieces

EMBED = "model.embed_tokens.weight"


def _retok(edit_dir, src: Path, dst: Path, **config: object) -> Path:
    """A copy of ``src`` whose tokenizer_config.json gets ``config`` merged in."""
    base = edit_dir(src, dst)
    path = base / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(config)
    path.write_text(json.dumps(cfg, indent=4))
    return base


def _add_tokens(base: Path, tokens: dict[int, str]) -> None:
    tok = json.loads((base / "tokenizer.json").read_text())
    tok["added_tokens"] = [
        {
            "id": i,
            "content": c,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, c in sorted(tokens.items())
    ]
    (base / "tokenizer.json").write_text(json.dumps(tok))


def test_template_and_config_changes_are_information(
    check, edit_dir, tmp_path: Path, pico_llama: Path, embed_adapter: Path, lm_head_adapter: Path
) -> None:
    """A release that changes only chat_template, model_max_length or adds tokenizer_config keys
    keeps every token id: embedding and head patches pass (main failed them: file bytes differed)."""
    base = _retok(
        edit_dir,
        pico_llama,
        tmp_path / "retok",
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    for adapter in (embed_adapter, lm_head_adapter):
        vocab = check(adapter, base, source=pico_llama).result("vocab")
        assert vocab.status == "pass", vocab.detail
        assert vocab.data["token_ids"] == "same"
        for part in ("chat_template added", "model_max_length 64 → 4096", "new key clean_up_tokenization_spaces"):
            assert part in vocab.detail


def test_other_vocabulary_fails_patched_rows_and_warns_otherwise(
    check, edit_dir, tmp_path: Path, pico_llama: Path, llama_adapter: Path, embed_adapter: Path, lm_head_adapter: Path
) -> None:
    base = edit_dir(pico_llama, tmp_path / "salted")
    picomodels.write_tokenizer(base, salt="x")
    for adapter, tensor in ((embed_adapter, EMBED), (lm_head_adapter, "lm_head.weight")):
        vocab = check(adapter, base, source=pico_llama).result("vocab")
        assert vocab.status == "fail", vocab.detail
        assert "token ids differ from the source's: vocabulary differs" in vocab.detail and tensor in vocab.detail
    plain = check(llama_adapter, base, source=pico_llama).result("vocab")
    assert plain.status == "warn" and "embeddings and the output head are not patched" in plain.detail


def test_tokens_added_at_new_ids_warn_even_for_embedding_patches(
    check, edit_dir, tmp_path: Path, pico_llama: Path, embed_adapter: Path
) -> None:
    source = edit_dir(pico_llama, tmp_path / "src")
    _add_tokens(source, {0: "<pad>", 90: "<|im_start|>"})
    grown = edit_dir(pico_llama, tmp_path / "grown")
    _add_tokens(grown, {0: "<pad>", 90: "<|im_start|>", 91: "<tool_call>", 92: "</tool_call>"})
    vocab = check(embed_adapter, grown, source=source).result("vocab")
    assert vocab.status == "warn", vocab.detail
    assert "2 tokens added at new ids (91–92); every id of the source keeps its token" in vocab.detail
    renamed = edit_dir(pico_llama, tmp_path / "renamed")
    _add_tokens(renamed, {0: "<pad>", 90: "<|python_tag|>"})
    vocab = check(embed_adapter, renamed, source=source).result("vocab")
    assert vocab.status == "fail" and "90: '<|im_start|>' → '<|python_tag|>'" in vocab.detail


def test_merges_are_part_of_the_token_ids(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    vocab = {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}
    for name, merges in (("one", [("a", "b")]), ("two", [("b", "c")])):
        (tmp_path / name).mkdir()
        Tokenizer(models.BPE(vocab, merges)).save(str(tmp_path / name / "tokenizer.json"))
    one, two = read_local_tokenizer(tmp_path / "one"), read_local_tokenizer(tmp_path / "two")
    assert one is not None and two is not None and one.vocab_sha256 == two.vocab_sha256
    diff = compare_tokenizers(one, two)
    assert diff.relation == "differs" and diff.reasons == ("merges differ (text splits into other tokens)",)


def _train_sentencepiece(out: Path, words: list[str], vocab: int = 60) -> Path:
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=vocab, model_type="bpe", minloglevel=2
    )
    (out / "tokenizer.vocab").unlink()
    corpus.unlink()
    return out


def test_sentencepiece_pieces_read_without_sentencepiece(tmp_path: Path) -> None:
    import sentencepiece as spm

    words = ["lora", "patch", "base", "release", "token", "merge", "check", "vocab", "model", "weights"]
    one = _train_sentencepiece(tmp_path / "one", words)
    proc = spm.SentencePieceProcessor(model_file=str(one / "tokenizer.model"))
    pieces = sentencepiece_pieces((one / "tokenizer.model").read_bytes())
    assert [p for p, _, _ in pieces] == [proc.id_to_piece(i) for i in range(proc.get_piece_size())]
    assert [s for _, s, _ in pieces] == pytest.approx([proc.get_score(i) for i in range(proc.get_piece_size())])
    assert pieces[0][2] == 2 and pieces[1][2] == 3  # <unk> unknown, <s> control
    facts = read_local_tokenizer(one)
    assert facts is not None and facts.kind == "sentencepiece" and facts.num_tokens == proc.get_piece_size()
    other = read_local_tokenizer(_train_sentencepiece(tmp_path / "two", [w + "s" for w in words]))
    assert other is not None and compare_tokenizers(facts, other).relation == "differs"


def test_special_token_role_change_warns(
    check, edit_dir, tmp_path: Path, pico_llama: Path, embed_adapter: Path
) -> None:
    source = _retok(edit_dir, pico_llama, tmp_path / "src", eos_token="</s>")
    target = _retok(edit_dir, pico_llama, tmp_path / "dst", eos_token="<pad>")
    vocab = check(embed_adapter, target, source=source).result("vocab")
    assert vocab.status == "warn" and "eos token id 2 → 0" in vocab.detail


def test_embeddings_found_by_name_not_by_width(models_dir: Path, check) -> None:
    """An MLP as wide as the vocabulary (64) is not an embedding: main listed up_proj/gate_proj."""
    base = picomodels.make_base(models_dir / "pico-llama-v64", "llama", vocab=64)
    adapter = picomodels.make_adapter(base, models_dir / "llama-v64-mlp", target_modules=["up_proj", "gate_proj"])
    vocab = check(adapter, base, source=base).result("vocab")
    assert vocab.status == "pass" and vocab.data["vocab_tensors_patched"] == []
    assert "same token ids" in vocab.detail


def test_unknown_token_ids_fail_only_when_vocab_rows_are_patched(
    make_manifest, tmp_path: Path, pico_llama: Path, embed_adapter: Path, llama_adapter: Path
) -> None:
    no_tok = shutil.copytree(pico_llama, tmp_path / "notok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / f).unlink()
    target = read_local_base(no_tok)
    assert target.tokenizer is None
    source = read_local_base(pico_llama)
    emb = run_checks(read_adapter_for_checks(embed_adapter), target, manifest=make_manifest(embed_adapter, source))
    assert emb.result("vocab").status == "fail"
    assert "the target base has no tokenizer patchctl can read" in emb.result("vocab").detail
    plain = run_checks(read_adapter_for_checks(llama_adapter), target, manifest=make_manifest(llama_adapter, source))
    assert plain.result("vocab").status == "warn"


def test_manifest_without_token_id_fingerprint(
    make_manifest, edit_dir, tmp_path: Path, pico_llama: Path, embed_adapter: Path
) -> None:
    """Old manifests recorded only the files' sha256: identical files still pass; otherwise the
    ids cannot be verified and the message says to push again."""
    source = read_local_base(pico_llama)
    old = make_manifest(embed_adapter, source, tokenizer=None)
    same = run_checks(read_adapter_for_checks(embed_adapter), source, manifest=old).result("vocab")
    assert same.status == "pass", same.detail
    retok = read_local_base(_retok(edit_dir, pico_llama, tmp_path / "retok", model_max_length=128))
    other = run_checks(read_adapter_for_checks(embed_adapter), retok, manifest=old).result("vocab")
    assert other.status == "fail" and "push the patch again" in other.detail


def test_unreadable_tokenizer_is_unknown_ids_not_a_refused_base(
    check, edit_dir, tmp_path: Path, pico_llama: Path, embed_adapter: Path, llama_adapter: Path
) -> None:
    base = edit_dir(pico_llama, tmp_path / "broken")
    (base / "tokenizer.json").write_text('{"model": 3}')
    assert read_local_base(base).tokenizer is None
    assert check(llama_adapter, base, source=pico_llama).result("vocab").status == "warn"
    vocab = check(embed_adapter, base, source=pico_llama).result("vocab")
    assert vocab.status == "fail" and "token ids cannot be verified" in vocab.detail
