"""The merge engine's contract besides numerics: sharding, θ′ + Δθ, atomicity, provenance, refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import picomodels
import pytest
import torch
from mergeref import Reference
from safetensors import safe_open

from patchctl._fs import sha256_file
from patchctl.adapter import read_adapter
from patchctl.bases import INDEX_FILE, read_local_base, read_safetensors_header
from patchctl.errors import ConflictError, InvalidInputError, UnsupportedError
from patchctl.merge import DELAY_ENV, PROVENANCE_FILE, execute_merge, plan_merge, write_rebased_adapter

IDS = torch.tensor([[1, 4, 8, 15, 16, 23, 42]])
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def updated_llama(models_dir: Path, pico_llama: Path) -> Path:
    out = models_dir / "pico-llama-updated"
    if not out.exists():
        picomodels.make_updated_base(pico_llama, out)
    return out


def test_sharded_base_keeps_sharding_and_index(
    pico_llama: Path, pico_llama_sharded: Path, llama_adapter: Path, ref: type[Reference], tmp_path: Path
) -> None:
    plan = plan_merge(read_adapter(llama_adapter), pico_llama_sharded)
    assert plan.sharded and len(plan.shards) > 1
    out = execute_merge(plan, tmp_path / "sharded", provenance={}).out_dir
    base_index = json.loads((pico_llama_sharded / INDEX_FILE).read_text())
    index = json.loads((out / INDEX_FILE).read_text())
    assert index["weight_map"] == base_index["weight_map"]
    assert index["metadata"]["total_size"] == plan.total_bytes
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(set(base_index["weight_map"].values()))
    for shard in out.glob("*.safetensors"):
        ours, base = read_safetensors_header(shard), read_safetensors_header(pico_llama_sharded / shard.name)
        assert list(ours) == list(base)  # same tensors, same header order
        assert ours["__metadata__"] == {"format": "pt"}
    single = execute_merge(plan_merge(read_adapter(llama_adapter), pico_llama), tmp_path / "single", provenance={})
    a, b = ref.load_dir_tensors(out), ref.load_dir_tensors(single.out_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_install_onto_updated_base_is_theta_prime_plus_delta(
    updated_llama: Path, llama_adapter: Path, ref: type[Reference], tmp_path: Path
) -> None:
    layout = read_adapter(llama_adapter)
    result = execute_merge(plan_merge(layout, updated_llama), tmp_path / "out", provenance={})
    merged = ref.load_dir_tensors(result.out_dir)
    theta_prime = ref.load_dir_tensors(updated_llama)
    cfg = json.loads((llama_adapter / "adapter_config.json").read_text())
    scaling = cfg["lora_alpha"] / cfg["r"]
    with safe_open(str(llama_adapter / "adapter_model.safetensors"), "pt") as f:
        lora = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    expected = dict(theta_prime)
    for key in lora:
        if ".lora_A." in key:
            module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
            a, b = lora[key].float(), lora[key.replace("lora_A", "lora_B")].float()
            expected[f"{module}.weight"] = theta_prime[f"{module}.weight"] + (b @ a) * scaling
    assert merged.keys() == theta_prime.keys()
    touched = 0
    for name, tensor in merged.items():
        assert torch.equal(tensor, expected[name]), name
        touched += not torch.equal(tensor, theta_prime[name])
    assert touched == len(layout.pairs) == 4


def test_rebased_adapter_loads_on_theta_prime_and_matches_merge(
    updated_llama: Path, llama_adapter: Path, ref: type[Reference], tmp_path: Path
) -> None:
    layout = read_adapter(llama_adapter)
    rebased = write_rebased_adapter(
        layout, tmp_path / "rebased", base_model_name_or_path=str(updated_llama), revision="abc123",
        provenance={"patch": "acme/fix@1.0"},
    )  # fmt: skip
    cfg = json.loads((rebased.out_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(updated_llama) and cfg["revision"] == "abc123"
    assert sha256_file(rebased.out_dir / "adapter_model.safetensors") == sha256_file(
        llama_adapter / "adapter_model.safetensors"
    )
    merged = execute_merge(plan_merge(layout, updated_llama), tmp_path / "merged", provenance={})
    torch.testing.assert_close(
        ref.peft_logits(updated_llama, rebased.out_dir, IDS),
        ref.model_logits(merged.out_dir, IDS),
        atol=2e-5,
        rtol=1e-4,
    )
    prov = json.loads((rebased.out_dir / PROVENANCE_FILE).read_text())
    assert prov["format"] == "adapter" and prov["provenance"] == {"patch": "acme/fix@1.0"}


def test_output_dir_contents_and_provenance(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(pico_llama, base)
    (base / "README.md").write_text("# base card\n")
    (base / "generation_config.json").write_text("{}")
    (base / "pytorch_model.bin").write_bytes(b"stale pickle")
    (base / "original").mkdir()
    (base / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    plan = plan_merge(read_adapter(llama_adapter), base)
    summary = plan.summary()
    json.dumps(summary)  # JSON-able for --dry-run
    assert {"README.md", "generation_config.json", "config.json", "tokenizer.json"} <= set(summary["files_copied"])
    assert set(summary["skipped"]) == {"pytorch_model.bin", "original", ".gitattributes"}
    assert summary["tensors_touched"] == 4 and summary["bytes_to_write"] == plan.total_bytes
    result = execute_merge(plan, tmp_path / "out", provenance={"patch": "acme/fix@1.0", "token": "hf_abcdefghijkl"})
    out = result.out_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*summary["files_copied"], "model.safetensors", PROVENANCE_FILE]
    )
    assert (out / "config.json").read_bytes() == (base / "config.json").read_bytes()
    prov_text = (out / PROVENANCE_FILE).read_text()
    assert "hf_abcdefghijkl" not in prov_text
    prov = json.loads(prov_text)
    assert prov["base"]["weights_sha256"] == read_local_base(base).weights_sha256
    assert prov["provenance"]["patch"] == "acme/fix@1.0" and prov["tool"] == "patchctl"
    recorded = {f["path"]: (f["sha256"], f["size"]) for f in prov["files"]}
    assert set(recorded) == {p.name for p in out.iterdir()} - {PROVENANCE_FILE}
    for name, (sha, size) in recorded.items():
        assert sha256_file(out / name) == sha and (out / name).stat().st_size == size
    assert not list(tmp_path.glob(".out.patchctl-*"))


def test_existing_output_refused_without_force(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    plan = plan_merge(read_adapter(llama_adapter), pico_llama)
    with pytest.raises(ConflictError, match="already exists"):
        execute_merge(plan, out, provenance={})
    assert (out / "keep.txt").read_text() == "mine"
    execute_merge(plan, out, force=True, provenance={})
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ConflictError):
        write_rebased_adapter(
            read_adapter(llama_adapter), out, base_model_name_or_path="x", revision=None, provenance={}
        )


def test_output_inside_base_refused(pico_llama: Path, llama_adapter: Path) -> None:
    plan = plan_merge(read_adapter(llama_adapter), pico_llama)
    with pytest.raises(InvalidInputError, match="outside"):
        execute_merge(plan, pico_llama, force=True, provenance={})
    assert (pico_llama / "model.safetensors").is_file()


def test_killed_merge_leaves_nothing_and_retry_succeeds(
    pico_llama: Path, llama_adapter: Path, ref: type[Reference], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        DELAY_ENV: "0.5",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchctl.merge", str(llama_adapter), str(pico_llama), str(out), "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        shard = None
        while time.monotonic() < deadline and proc.poll() is None:
            tmps = list(tmp_path.glob(".out.patchctl-tmp-*/model.safetensors"))
            if tmps and tmps[0].stat().st_size > 0:
                shard = tmps[0]
                break
            time.sleep(0.05)
        assert shard is not None, f"merge did not start writing: {proc.stderr.read() if proc.stderr else ''!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert list(tmp_path.glob(".out.patchctl-tmp-*"))  # the half-written temporary sibling
    result = execute_merge(plan_merge(read_adapter(llama_adapter), pico_llama), out, provenance={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # stale temporary removed
    reference = ref.peft_merged_state_dict(pico_llama, llama_adapter, torch.float32)
    assert all(torch.equal(t, reference[k]) for k, t in ref.load_dir_tensors(result.out_dir).items())


def test_unmatched_keys_refused(pico_llama: Path, gpt2_adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no tensor in the base"):
        plan_merge(read_adapter(gpt2_adapter), pico_llama)


def test_shape_mismatch_refused(pico_llama: Path, llama_adapter: Path, models_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(llama_adapter / "adapter_model.safetensors")
    key = next(k for k in weights if "q_proj.lora_B" in k)
    wide = _rewrite_adapter(llama_adapter, tmp_path / "wide", {key: torch.ones(48, weights[key].shape[1])})
    with pytest.raises(InvalidInputError, match=r"shape \[48, 32\]"):
        plan_merge(read_adapter(wide), pico_llama)
    big_vocab = picomodels.make_base(models_dir / "pico-llama-v128", "llama", vocab=128)
    head = picomodels.make_adapter(big_vocab, models_dir / "v128-head", modules_to_save=["lm_head"])
    with pytest.raises(InvalidInputError, match="resized vocabulary"):
        plan_merge(read_adapter(head), pico_llama)


def _rewrite_adapter(src: Path, dst: Path, tensors: dict[str, torch.Tensor] | None = None, **config: object) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg.update(config)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    if tensors is not None:
        save_file({**load_file(src / "adapter_model.safetensors"), **tensors}, dst / "adapter_model.safetensors")
    return dst


def test_conv_lora_and_dora_refused(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(llama_adapter / "adapter_model.safetensors")
    key = next(k for k in weights if ".lora_A." in k)
    conv = _rewrite_adapter(llama_adapter, tmp_path / "conv", {key: weights[key].reshape(*weights[key].shape, 1, 1)})
    with pytest.raises(UnsupportedError, match="convolution"):
        plan_merge(read_adapter(conv), pico_llama)
    dora = _rewrite_adapter(llama_adapter, tmp_path / "dora", use_dora=True)
    with pytest.raises(UnsupportedError, match="DoRA"):
        plan_merge(read_adapter(dora), pico_llama)


def test_rank_pattern_disagreeing_with_tensors_refused(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    bad = _rewrite_adapter(llama_adapter, tmp_path / "bad", rank_pattern={"q_proj": 2})
    with pytest.raises(InvalidInputError, match="rank"):
        plan_merge(read_adapter(bad), pico_llama)


def test_quantized_tensor_refused(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    base = tmp_path / "int8"
    shutil.copytree(pico_llama, base)
    tensors = load_file(base / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors[name] = tensors[name].to(torch.int8)
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UnsupportedError, match="quantized"):
        plan_merge(read_adapter(llama_adapter), base)


def test_base_changed_after_planning_refused(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    base = tmp_path / "base"
    shutil.copytree(pico_llama, base)
    plan = plan_merge(read_adapter(llama_adapter), base)
    tensors = load_file(base / "model.safetensors")
    save_file({k: v.half() for k, v in tensors.items()}, base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InvalidInputError, match="changed since the merge was planned"):
        execute_merge(plan, tmp_path / "out", provenance={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


@pytest.mark.parametrize("overlap", [True, False])
def test_shards_are_hashed_as_written_without_a_second_read(
    pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overlap: bool
) -> None:
    """Each output shard's sha256 comes from its writes (header, merged rows, copied ranges, front
    to back), not from reading the file again, and equals the file's real sha256."""
    from patchctl.merge import _execute

    reread: list[Path] = []
    real = _execute._sha256
    monkeypatch.setattr(_execute, "_sha256", lambda p: reread.append(p) or real(p))
    plan = plan_merge(read_adapter(llama_adapter), pico_llama_sharded)
    result = execute_merge(plan, tmp_path / "out", provenance={}, overlap=overlap)
    shards = [f for f in result.files if f.path.endswith(".safetensors")]
    assert len(shards) == len(plan.shards) > 1
    for f in shards:
        assert sha256_file(result.out_dir / f.path) == f.sha256
    assert [p for p in reread if p.parent != pico_llama_sharded] == []  # only the base's own fingerprint


def test_stream_hash_gives_up_on_writes_out_of_order(tmp_path: Path) -> None:
    """A file not written front to back is hashed by reading it (the digest of the writes is refused)."""
    import hashlib

    from patchctl.merge._pipeline import StreamHash

    h = StreamHash(b"head")
    h.wrote(4, memoryview(b"abc"))
    assert h.hexdigest(7) == hashlib.sha256(b"headabc").hexdigest()
    assert h.hexdigest(8) is None  # a byte that never went through the hash (a hole, a truncation)
    src = tmp_path / "src"
    src.write_bytes(b"0123456789")
    fd = os.open(src, os.O_RDONLY)
    try:
        h.copied(fd, 2, 7, 5)
        assert h.hexdigest(12) == hashlib.sha256(b"headabc23456").hexdigest()
        h.wrote(20, memoryview(b"late"))  # a gap before it: given up
        assert h.hexdigest(24) is None and h.hexdigest(12) is None
    finally:
        os.close(fd)
