"""`patchctl check` / `patchctl install` end to end through the real CLI (exit codes, stdout/stderr)."""

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
from catalogtools import CliResult, run_cli
from safetensors.torch import load_file

from patchctl.merge import DELAY_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "acme/sst2"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="session")
def theta_prime(models_dir: Path, pico_llama: Path) -> Path:
    """θ′: the pico Llama plus small noise."""
    return picomodels.make_updated_base(pico_llama, models_dir / "cli-pico-llama-v2")


@pytest.fixture(scope="session")
def other_family_llama(models_dir: Path, pico_llama: Path) -> Path:
    """Llama's tensors (updated) declared as another model_type: the q/v patch merges, the family
    check fails. (Another vocabulary size no longer fails a q/v patch: it only warns.)"""
    out = picomodels.make_updated_base(pico_llama, models_dir / "cli-pico-llama-as-mistral")
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="session")
def dora_adapter_cli(models_dir: Path, pico_llama: Path) -> Path:
    return picomodels.make_adapter(pico_llama, models_dir / "cli-llama-dora", use_dora=True)


def _cli(home: Path, db_url: str | None, *args: object) -> CliResult:
    db = ["--db", db_url] if db_url else []
    return run_cli(["--home", str(home), *db, *[str(a) for a in args]])


def _pushed(home: Path, db_url: str | None, adapter: Path, base: Path) -> None:
    if db_url:
        assert _cli(home, db_url, "db", "upgrade").code == 0
    r = _cli(home, db_url, "push", adapter, "--name", NAME, "--version", "1.0.0", "--task", "sst2", "--base", base)
    assert r.code == 0, r.stderr


def data_status(stdout: str) -> str:
    status: str = json.loads(stdout)["report"]["status"]
    return status


def _show(home: Path, db_url: str | None, ref: str = NAME) -> dict[str, object]:
    r = _cli(home, db_url, "show", ref, "--json")
    assert r.code == 0, r.stderr
    data: dict[str, object] = json.loads(r.stdout)
    return data


def test_check_pass_then_lineage_warn_until_recorded(
    db_url: str, home: Path, llama_adapter: Path, pico_llama: Path, theta_prime: Path
) -> None:
    _pushed(home, db_url, llama_adapter, pico_llama)
    r = _cli(home, db_url, "check", NAME, "--onto", pico_llama)
    assert r.code == 0, r.stderr
    assert "PASS (7 pass, 0 warn, 0 fail)" in r.stdout and "lineage" in r.stdout

    r = _cli(home, db_url, "check", NAME, "--onto", pico_llama, "--json")
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["status"], report["exit_code"], report["patch"]) == ("pass", 0, f"{NAME}==1.0.0")
    assert {x["name"]: x["status"] for x in report["results"]}["coverage"] == "pass"
    logged = _show(home, db_url)["compat_reports"]
    assert isinstance(logged, list) and report["report_id"] in [x["id"] for x in logged]

    r = _cli(home, db_url, "check", NAME, "--onto", theta_prime, "--json")
    assert r.code == 20, r.stderr
    assert [x["name"] for x in json.loads(r.stdout)["results"] if x["status"] == "warn"] == ["lineage"]
    r = _cli(home, db_url, "base", "add", theta_prime, "--parent", pico_llama)
    assert r.code == 0, r.stderr
    r = _cli(home, db_url, "check", NAME, "--onto", theta_prime)
    assert r.code == 0, r.stdout + r.stderr
    assert "recorded descendant" in r.stdout


def test_failing_pair_check_and_install_exit_21(
    home: Path, llama_adapter: Path, pico_llama: Path, pico_gpt2: Path, other_family_llama: Path, tmp_path: Path
) -> None:
    _pushed(home, None, llama_adapter, pico_llama)
    r = _cli(home, None, "check", NAME, "--onto", pico_gpt2)
    assert r.code == 21
    assert "FAIL" in r.stdout and "family" in r.stdout and "coverage" in r.stdout
    out = tmp_path / "dest" / "out"
    r = _cli(home, None, "install", NAME, "--onto", pico_gpt2, "--out", out)
    assert r.code == 21
    assert r.stdout == ""
    assert "CHECK" in r.stderr and "refusing to install" in r.stderr and "--force" in r.stderr
    assert not (tmp_path / "dest").exists()
    r = _cli(home, None, "install", NAME, "--onto", pico_gpt2, "--out", out, "--json")
    assert r.code == 21 and not (tmp_path / "dest").exists()
    refused = json.loads(r.stdout)
    assert refused["installed"] is False and refused["report"]["status"] == "fail"
    assert refused["report"]["exit_code"] == 21 and "refusing to install" in r.stderr
    # a dry run of a refused install is refused the same way (with --force it shows the plan)
    r = _cli(home, None, "install", NAME, "--onto", other_family_llama, "--dry-run")
    assert r.code == 21 and "family" in r.stderr and r.stdout == ""
    r = _cli(home, None, "install", NAME, "--onto", other_family_llama, "--dry-run", "--force")
    assert r.code == 0 and "4 of 21 tensors touched" in r.stdout
    assert not (tmp_path / "dest").exists()
    assert _show(home, None)["installs"] == []


def test_forced_install_is_logged_as_forced(
    db_url: str, home: Path, llama_adapter: Path, pico_llama: Path, other_family_llama: Path, tmp_path: Path
) -> None:
    _pushed(home, db_url, llama_adapter, pico_llama)
    out = tmp_path / "out"
    r = _cli(home, db_url, "install", NAME, "--onto", other_family_llama, "--out", out, "--force")
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert "FAIL (5 pass, 0 warn, 2 fail: family, lineage)" in r.stderr  # the report, on stderr
    assert "warning: installed despite failed checks (family, lineage)" in r.stderr
    assert json.loads((out / "patchctl.json").read_text())["provenance"]["forced"] is True
    installs = _show(home, db_url)["installs"]
    assert isinstance(installs, list)
    [row] = installs
    assert (row["forced"], row["format"], row["out_path"]) == (True, "merged", str(out))


def test_unsupported_variant_refused_even_with_force(
    home: Path, dora_adapter_cli: Path, pico_llama: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dest" / "out"
    r = _cli(home, None, "check", dora_adapter_cli, "--onto", pico_llama)
    assert r.code == 21 and "DoRA" in r.stdout
    r = _cli(home, None, "install", dora_adapter_cli, "--onto", pico_llama, "--out", out)
    assert r.code == 6 and "DoRA" in r.stderr  # unsupported, not merely failing checks
    r = _cli(home, None, "install", dora_adapter_cli, "--onto", pico_llama, "--out", out, "--force")
    assert r.code == 6, r.stderr
    assert "DoRA" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "dest").exists()


def test_install_merged_output(
    home: Path, llama_adapter: Path, pico_llama: Path, theta_prime: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _pushed(home, None, llama_adapter, pico_llama)
    out = tmp_path / "merged"
    r = _cli(home, None, "install", NAME, "--onto", theta_prime, "--out", out, "--json")
    assert r.code == 0, r.stderr  # lineage warns (θ′ not recorded); the install proceeds
    assert data_status(r.stdout) == "warn"
    data = json.loads(r.stdout)
    assert data["out_dir"] == str(out) and data["forced"] is False and data["install_id"] is not None
    assert data["result"]["tensors_touched"] == 4
    merged = load_file(out / "model.safetensors")
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(theta_prime), llama_adapter)
    reference = peft.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    assert all(torch.equal(merged[k], reference[k]) for k in merged)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"


def test_install_with_warnings_succeeds(
    home: Path, llama_adapter: Path, pico_llama: Path, theta_prime: Path, tmp_path: Path
) -> None:
    _pushed(home, None, llama_adapter, pico_llama)
    out = tmp_path / "out"
    r = _cli(home, None, "install", NAME, "--onto", theta_prime, "--out", out)
    assert r.code == 0, r.stderr
    assert "WARN (6 pass, 1 warn, 0 fail: lineage)" in r.stderr
    assert r.stdout.strip() == str(out) and "4 tensors merged" in r.stderr
    assert (out / "model.safetensors").is_file()


def test_dry_run_prints_plan_and_writes_nothing(
    home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    _pushed(home, None, llama_adapter, pico_llama)
    out = tmp_path / "dest" / "out"
    r = _cli(home, None, "install", NAME, "--onto", pico_llama, "--out", out, "--dry-run")
    assert r.code == 0, r.stderr
    assert "4 of 21 tensors touched" in r.stdout and "model.safetensors" in r.stdout
    assert "nothing written" in r.stdout
    r = _cli(home, None, "install", NAME, "--onto", pico_llama, "--out", out, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["dry_run"] is True and data["result"] is None and data["install_id"] is None
    assert data["plan"]["tensors_touched"] == 4 and data["report"]["status"] == "pass"
    assert len(data["plan"]["touched"]) == 4
    r = _cli(home, None, "install", NAME, "--onto", pico_llama, "--dry-run", "--format", "adapter")
    assert r.code == 0 and "no merge plan" in r.stdout
    assert not (tmp_path / "dest").exists()
    assert _show(home, None)["installs"] == []


def test_adapter_format_rebased_onto_new_base(
    home: Path, llama_adapter: Path, pico_llama: Path, theta_prime: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _pushed(home, None, llama_adapter, pico_llama)
    assert _cli(home, None, "base", "add", theta_prime, "--parent", pico_llama).code == 0
    out = tmp_path / "rebased"
    r = _cli(home, None, "install", NAME, "--onto", theta_prime, "--out", out, "--format", "adapter")
    assert r.code == 0, r.stderr
    assert "rebased adapter" in r.stderr and "tensors merged" not in r.stderr
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(theta_prime)
    assert (
        load_file(out / "adapter_model.safetensors").keys()
        == load_file(llama_adapter / "adapter_model.safetensors").keys()
    )
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(theta_prime), out)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    installs = _show(home, None)["installs"]
    assert isinstance(installs, list) and [i["format"] for i in installs] == ["adapter"]


def test_existing_out_refused_then_replaced(home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    r = _cli(home, None, "install", llama_adapter, "--onto", pico_llama, "--out", out)
    assert r.code == 5 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert (out / "precious.txt").exists()
    # --force is about checks only: it no longer replaces an output (issue 8)
    r = _cli(home, None, "install", llama_adapter, "--onto", pico_llama, "--out", out, "--force")
    assert r.code == 5 and "already exists" in r.stderr and (out / "precious.txt").exists()
    r = _cli(home, None, "install", llama_adapter, "--onto", pico_llama, "--out", out, "--overwrite")
    assert r.code == 0, r.stderr
    assert "lineage" in r.stderr and "WARN" in r.stderr  # a bare adapter dir: no manifest, no lineage
    assert not (out / "precious.txt").exists() and (out / "patchctl.json").is_file()


def test_local_adapter_dir_with_and_without_manifest(
    home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    _pushed(home, None, llama_adapter, pico_llama)
    bare = Path(shutil.copytree(llama_adapter, tmp_path / "bare"))
    with_manifest = Path(shutil.copytree(llama_adapter, tmp_path / "with-manifest"))
    shown = _show(home, None)
    version = shown["version"]
    assert isinstance(version, dict)
    (with_manifest / "patch.json").write_text(json.dumps(version["manifest"]))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = _cli(home, None, "check", "./bare", "--onto", pico_llama, "--json")
        assert r.code == 20, r.stderr
        assert json.loads(r.stdout)["report_id"] is None
        r = _cli(home, None, "install", "./with-manifest", "--onto", pico_llama, "--out", "o1")
        assert r.code == 0, r.stderr
        r = _cli(home, None, "install", "./bare", "--onto", pico_llama, "--out", "o2")
        assert r.code == 0, r.stderr
    finally:
        os.chdir(cwd)
    prov = json.loads((tmp_path / "o1" / "patchctl.json").read_text())["provenance"]
    assert prov["patch"] == str(with_manifest) and prov["manifest_content_digest"] is not None
    prov = json.loads((tmp_path / "o2" / "patchctl.json").read_text())["provenance"]
    assert prov["patch"] == str(bare) and prov["manifest_content_digest"] is None
    assert (tmp_path / "o2" / "model.safetensors").is_file()
    shown = _show(home, None)
    assert shown["installs"] == [] and shown["compat_reports"] == []


def test_yanked_versions(
    home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _pushed(home, None, llama_adapter, pico_llama)
    assert _cli(home, None, "yank", f"{NAME}==1.0.0", "--reason", "bad labels").code == 0
    r = _cli(home, None, "install", NAME, "--onto", pico_llama, "--out", tmp_path / "o")
    assert r.code == 3 and "every version of acme/sst2 is yanked" in r.stderr and "==1.0.0" in r.stderr
    r = _cli(home, None, "check", NAME, "--onto", pico_llama)
    assert r.code == 3 and r.stdout == ""
    assert not (tmp_path / "o").exists()
    r = _cli(home, None, "install", f"{NAME}==1.0.0", "--onto", pico_llama, "--out", tmp_path / "o")
    assert r.code == 0, r.stderr
    # a logging warning (stderr in a terminal; under pytest the root logger belongs to caplog)
    assert any("yanked: bad labels" in rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING")
    assert (tmp_path / "o" / "model.safetensors").is_file()


def test_bad_invocations(home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path) -> None:
    r = _cli(home, None, "install", llama_adapter, "--onto", pico_llama)
    assert r.code == 2 and "--out" in r.stderr and "Traceback" not in r.stderr  # usage errors are 2
    r = _cli(home, None, "install", llama_adapter, "--out", tmp_path / "o")
    assert r.code == 2 and "--onto" in r.stderr
    r = _cli(home, None, "install", llama_adapter, "--onto", pico_llama, "--out", tmp_path / "o", "--format", "gguf")
    assert r.code == 2
    r = _cli(home, None, "check", "acme/nothing", "--onto", pico_llama)
    assert r.code == 3 and r.stdout == ""
    r = _cli(home, None, "check", llama_adapter, "--onto", tmp_path / "no-base")
    assert r.code == 4 and r.stdout == "" and "base directory does not exist" in r.stderr
    r = _cli(home, None, "install", llama_adapter, "--onto", pico_llama, "--out", pico_llama / "inside")
    assert r.code == 4 and "outside" in r.stderr
    assert not (pico_llama / "inside").exists() and not (tmp_path / "o").exists()


def _subprocess_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATCHCTL_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def test_check_and_dry_run_do_not_import_torch(home: Path, llama_adapter: Path, pico_llama: Path) -> None:
    _pushed(home, None, llama_adapter, pico_llama)
    code = (
        "import sys\n"
        "from patchctl.cli import main\n"
        "for argv in (['check', 'acme/sst2', '--onto', sys.argv[1], '--json'], ['check', sys.argv[2], '--onto', sys.argv[1]],\n"
        "             ['install', 'acme/sst2', '--onto', sys.argv[1], '--dry-run', '--json']):\n"
        "    sys.argv = ['patchctl', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0 or e.code == 20, e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(pico_llama), str(llama_adapter)],
        env=_subprocess_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr


def test_killed_install_leaves_nothing_and_retry_succeeds(
    home: Path, llama_adapter: Path, pico_llama_sharded: Path, tmp_path: Path
) -> None:
    _pushed(home, None, llama_adapter, pico_llama_sharded)
    dest = tmp_path / "dest"
    out = dest / "out"
    args = ["install", NAME, "--onto", str(pico_llama_sharded), "--out", str(out), "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchctl", *args],
        env={**_subprocess_env(home), DELAY_ENV: "0.3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        started = False
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.is_file() for p in dest.glob(".out.patchctl-tmp-*/*.safetensors")):
                started = True
                break
            time.sleep(0.05)
        assert started, f"install did not start writing: {proc.stderr.read() if proc.stderr else ''!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    # the adapter was laid out (atomically) before the merge began: complete, and reused by the retry
    [laid_out] = list((home / "adapters").iterdir())
    assert (laid_out / "adapter_model.safetensors").is_file() and (laid_out / "patch.json").is_file()
    assert _show(home, None)["installs"] == []
    r = _cli(home, None, "install", NAME, "--onto", pico_llama_sharded, "--out", out)
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["out"]  # the killed run's temporary sibling is gone
    assert list((home / "adapters").iterdir()) == [laid_out]
    assert not list((home / "adapters").glob(".materialize-*"))
    assert (out / "model.safetensors.index.json").is_file()
    installs = _show(home, None)["installs"]
    assert isinstance(installs, list) and len(installs) == 1


def test_install_from_a_directory_remote_into_a_fresh_home(
    llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    publisher, deployer = tmp_path / "publisher", tmp_path / "deployer"
    registry = f"file://{tmp_path / 'registry'}"
    r = _cli(publisher, None, "push", llama_adapter, "--name", NAME, "--version", "1.0.0", "--task", "t",
             "--base", pico_llama, "--to", registry)  # fmt: skip
    assert r.code == 0, r.stderr
    out = tmp_path / "out"
    r = _cli(deployer, None, "install", f"{registry}/{NAME}@1.0.0", "--onto", pico_llama, "--out", out, "--json")
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["report"]["patch"] == f"{NAME}==1.0.0" and data["install_id"] is not None
    installs = _show(deployer, None)["installs"]
    assert isinstance(installs, list) and [i["out_path"] for i in installs] == [str(out)]
    merged = load_file(out / "model.safetensors")
    r = _cli(tmp_path / "other", None, "install", llama_adapter, "--onto", pico_llama, "--out", tmp_path / "o2")
    assert r.code == 0, r.stderr
    direct = load_file(tmp_path / "o2" / "model.safetensors")
    assert all(torch.equal(merged[k], direct[k]) for k in direct)
