"""validate end to end: scores equal lm-eval's own, the in-memory patch equals install's output bit for
bit, a trained patch scores higher patched, a damaging one regresses (exit 22), checks gate (exit 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from catalogtools import CliResult, run_cli
from evaltools import TASK, make_eval_base
from safetensors.torch import load_file

from patchctl.evaluate._apply import applied_patch, merged_tensors, state_checksum


def _cli(home: Path, db: str, *args: object) -> CliResult:
    return run_cli(["--home", str(home), "--db", db, *[str(a) for a in args]])


def _push(
    home: Path, db: str, adapter: Path, base: Path, folder: Path, *extra: object, name: str = "acme/pref"
) -> CliResult:
    r = _cli(home, db, "push", adapter, "--name", name, "--version", "1.0.0", "--task", "prefers w4", "--base", base,
             "--eval", folder, "--json", *extra)  # fmt: skip
    assert r.code == 0, r.stderr
    return r


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def _safetensors_dir(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("kind", ["llama-fp32", "llama-bf16", "gpt2"])
def test_in_memory_patch_equals_install_bit_for_bit(kind: str, tmp_path: Path, home: Path, db: str) -> None:
    import picomodels
    from transformers import AutoModelForCausalLM

    if kind == "gpt2":
        base = picomodels.make_base(tmp_path / "base", "gpt2")
        adapter = picomodels.make_adapter(base, tmp_path / "lora", target_modules=["c_attn", "c_proj"])
    else:
        dtype = torch.bfloat16 if kind.endswith("bf16") else torch.float32
        base = picomodels.make_base(tmp_path / "base", dtype=dtype)
        adapter = picomodels.make_adapter(base, tmp_path / "lora", target_modules=["q_proj", "v_proj", "down_proj"])
    out = tmp_path / "installed"
    r = _cli(home, db, "install", adapter, "--onto", base, "--out", out)
    assert r.code == 0, r.stderr
    installed = _safetensors_dir(out)
    merged = merged_tensors(adapter, base)
    assert merged
    for name, t in merged.items():
        assert t.dtype == installed[name].dtype and torch.equal(t, installed[name]), name

    # the model with the patch applied holds exactly the installed weights, and exactly the base's after
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    before = state_checksum(model)
    with applied_patch(model, merged):
        state = model.state_dict()
        for name, t in installed.items():
            assert torch.equal(state[name], t), name
        assert state_checksum(model) != before
    assert state_checksum(model) == before


def _lm_eval_cli(model_dir: Path, folder: Path, out: Path) -> float:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir}", "--tasks", TASK,
         "--include_path", str(folder), "--batch_size", "1", "--device", "cpu", "--output_path", str(out)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = list(out.rglob("results_*.json"))
    return float(json.loads(result.read_text())["results"][TASK]["acc,none"])


@pytest.mark.slow
def test_scores_equal_lm_evals_own(
    tmp_path: Path, home: Path, db: str, eval_base: Path, eval_folder: Path, good_adapter: Path
) -> None:
    _push(home, db, good_adapter, eval_base, eval_folder, "--no-baseline")
    r = _cli(home, db, "validate", "acme/pref", "--onto", eval_base, "--json", "--device", "cpu")
    assert r.code == 0, r.stderr
    [task] = json.loads(r.stdout)["tasks"]
    out = tmp_path / "installed"
    assert _cli(home, db, "install", "acme/pref", "--onto", eval_base, "--out", out).code == 0
    assert task["patched"] == _lm_eval_cli(out, eval_folder, tmp_path / "r-patched")
    assert task["unpatched"] == _lm_eval_cli(eval_base, eval_folder, tmp_path / "r-base")


def test_trained_patch_passes_on_the_new_base(
    home: Path, db: str, eval_base: Path, eval_base_v2: Path, eval_folder: Path, good_adapter: Path
) -> None:
    pushed = json.loads(_push(home, db, good_adapter, eval_base, eval_folder).stdout)
    [spec] = pushed["version"]["manifest"]["eval"]["tasks"]
    assert (spec["task"], spec["metric"], spec["max_drop"]) == (TASK, "acc", 0.02)
    baseline = spec["baseline"]
    assert baseline["patched"] > baseline["unpatched"]  # the patch does its job on θ
    files = [f["path"] for f in pushed["version"]["manifest"]["files"]]
    assert f"eval/{TASK}.yaml" in files and "eval/data.jsonl" in files

    r = _cli(home, db, "validate", "acme/pref", "--onto", eval_base_v2, "--json")
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"patch", "base", "verdict", "tasks", "validation_id"}
    assert data["patch"] == "acme/pref==1.0.0" and data["verdict"] == "pass"
    [task] = data["tasks"]
    assert set(task) == {"task", "metric", "patched", "unpatched", "baseline_patched", "baseline_unpatched",
                         "retained", "verdict"}  # fmt: skip
    assert task["patched"] > task["unpatched"]
    assert (task["baseline_patched"], task["baseline_unpatched"]) == (baseline["patched"], baseline["unpatched"])
    assert task["retained"] == pytest.approx(
        (task["patched"] - task["unpatched"]) / (baseline["patched"] - baseline["unpatched"])
    )
    assert r.stdout.lstrip().startswith("{")  # nothing of lm-eval's on stdout

    # deterministic: the same run gives the same scores
    again = json.loads(_cli(home, db, "validate", "acme/pref", "--onto", eval_base_v2, "--json").stdout)
    assert again["tasks"] == data["tasks"] and again["validation_id"] != data["validation_id"]

    shown = json.loads(_cli(home, db, "show", "acme/pref", "--json").stdout)
    rows = {v["id"]: v for v in shown["validations"]}
    row = rows[data["validation_id"]]
    assert row["verdict"] == "pass" and row["base_ref"] == str(eval_base_v2) and row["lm_eval_version"]
    assert row["tool_version"] and row["duration_s"] > 0 and row["check_status"] in ("pass", "warn")
    assert not row["forced"] and row["limit"] is None
    assert row["scores"]["tasks"][0]["patched"] == task["patched"]
    assert len(rows) == 3  # the baseline recorded at push, and the two runs

    # the human table
    r = _cli(home, db, "validate", "acme/pref", "--onto", eval_base_v2, "--limit", "4")
    assert r.code == 0 and "pass" in r.stdout and "acme/pref==1.0.0 on" in r.stdout and ": PASS" in r.stderr


def test_damaging_patch_is_regressed_exit_22(
    home: Path, db: str, eval_base: Path, eval_folder: Path, bad_adapter: Path
) -> None:
    _push(home, db, bad_adapter, eval_base, eval_folder, "--no-baseline", "--min-score", "0.5")
    r = _cli(home, db, "validate", "acme/pref", "--onto", eval_base, "--json")
    assert r.code == 22, r.stderr
    data = json.loads(r.stdout)
    assert data["verdict"] == "regressed"
    [task] = data["tasks"]
    assert task["patched"] < task["unpatched"] and task["patched"] < 0.5
    assert task["baseline_patched"] is None and task["retained"] is None


def test_no_baseline_then_recorded_on_the_source_base(
    home: Path, db: str, eval_base: Path, eval_base_v2: Path, eval_folder: Path, good_adapter: Path
) -> None:
    _push(home, db, good_adapter, eval_base, eval_folder, "--no-baseline")
    first = json.loads(_cli(home, db, "validate", "acme/pref", "--onto", eval_base_v2, "--json").stdout)
    assert first["verdict"] == "no-baseline"
    # validate on the source base records the baseline; later runs compare with it
    _cli(home, db, "validate", "acme/pref", "--onto", eval_base, "--json")
    later = json.loads(_cli(home, db, "validate", "acme/pref", "--onto", eval_base_v2, "--json").stdout)
    assert later["verdict"] == "pass" and later["tasks"][0]["baseline_patched"] is not None


def test_failed_checks_refuse_unless_forced(
    tmp_path: Path, home: Path, db: str, eval_base: Path, eval_folder: Path, good_adapter: Path
) -> None:
    other_vocab = make_eval_base(tmp_path / "other-vocab", vocab=100, layers=3)  # family fails
    _push(home, db, good_adapter, eval_base, eval_folder, "--no-baseline")
    r = _cli(home, db, "validate", "acme/pref", "--onto", other_vocab, "--json")
    assert r.code == 21 and "refusing to validate" in r.stderr and r.stdout == ""
    shown = json.loads(_cli(home, db, "show", "acme/pref", "--json").stdout)
    assert shown["validations"] == []
    r = _cli(home, db, "validate", "acme/pref", "--onto", other_vocab, "--json", "--force")
    assert r.code == 0, r.stderr
    shown = json.loads(_cli(home, db, "show", "acme/pref", "--json").stdout)
    [row] = shown["validations"]
    assert row["forced"] is True and row["check_status"] == "fail"


def test_validate_needs_an_eval_set(home: Path, db: str, llama_adapter: Path, pico_llama: Path) -> None:
    r = _cli(home, db, "push", llama_adapter, "--name", "acme/x", "--version", "1", "--task", "t", "--base", pico_llama)
    assert r.code == 0
    r = _cli(home, db, "validate", "acme/x", "--onto", pico_llama)
    assert r.code == 3 and "carries no eval set" in r.stderr
