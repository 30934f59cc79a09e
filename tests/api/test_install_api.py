"""patchctl.api.check / install end to end: catalog version → checks → θ′ + Δθ on disk, logged."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import picomodels
import pytest
import torch
from hubserver import HubServer
from safetensors.torch import load_file

from patchctl import api
from patchctl.errors import (
    CheckFailedError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
    UsageError,
)
from patchctl.settings import Settings

NAME = "acme/sst2"


@pytest.fixture(scope="session")
def pico_llama_as_mistral(models_dir: Path, pico_llama: Path) -> Path:
    """Llama's tensors (updated) declared as another model_type: the q/v LoRA merges, the family
    check fails. (Another vocabulary size no longer fails a q/v patch: it only warns.)"""
    out = picomodels.make_updated_base(pico_llama, models_dir / "pico-llama-as-mistral")
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="session")
def dora_adapter(models_dir: Path, pico_llama: Path) -> Path:
    return picomodels.make_adapter(pico_llama, models_dir / "llama-dora", use_dora=True)


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    """A default (SQLite, created on first use) catalog, for tests where the backend does not matter."""
    return Settings.resolve(home=str(tmp_path / "home"))


def _push(settings: Settings, adapter: Path, base: Path, version: str = "1.0.0") -> None:
    api.push(settings, adapter, base_dir=base, name=NAME, version=version, task="sst2")


def _theta_plus_delta(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """θ′ + s·B@A computed here from the raw files (fp32 delta, one rounding), independent of patchctl."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    lora = load_file(adapter / "adapter_model.safetensors")
    out = load_file(base / "model.safetensors")
    prefix = "base_model.model."
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        target = key[len(prefix) :].split(".lora_A.")[0] + ".weight"
        w = out[target]
        out[target] = (w.float() + (b.float() @ a.float()) * scale).to(w.dtype)
    return out


def _peft_merged(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    return {k: v.detach() for k, v in model.merge_and_unload().state_dict().items()}


def test_check_passes_on_source_base_and_is_logged(settings: Settings, llama_adapter: Path, pico_llama: Path) -> None:
    _push(settings, llama_adapter, pico_llama)
    outcome = api.check(settings, NAME, onto=str(pico_llama), progress=False)
    report = outcome.report
    assert report.status == "pass" and report.exit_code() == 0
    assert {r.name for r in report.results} >= {"format", "family", "coverage", "shapes", "dtype", "vocab", "lineage"}
    assert all(r.status == "pass" for r in report.results)
    assert outcome.patch == f"{NAME}==1.0.0"
    [logged] = api.show(settings, NAME).compat_reports
    assert logged.id == outcome.report_id is not None
    assert logged.status == "pass"


def test_lineage_warns_until_the_update_is_recorded(
    settings: Settings, llama_adapter: Path, pico_llama: Path, pico_llama_updated: Path
) -> None:
    _push(settings, llama_adapter, pico_llama)
    first = api.check(settings, NAME, onto=str(pico_llama_updated), progress=False).report
    assert first.status == "warn" and first.exit_code() == 20
    assert [r.name for r in first.results if r.status != "pass"] == ["lineage"]
    api.base_add(settings, pico_llama_updated, parents=(str(pico_llama),))
    second = api.check(settings, NAME, onto=str(pico_llama_updated), progress=False).report
    assert second.status == "pass" and second.exit_code() == 0
    assert len(api.show(settings, NAME, all_reports=True).compat_reports) == 2
    assert [r.status for r in api.show(settings, NAME).compat_reports] == ["pass"]  # the newest per base


def test_install_onto_updated_base_equals_theta_prime_plus_delta_and_peft(
    local_settings: Settings, llama_adapter: Path, pico_llama: Path, pico_llama_updated: Path, tmp_path: Path
) -> None:
    _push(local_settings, llama_adapter, pico_llama)
    out = tmp_path / "merged"
    outcome = api.install(local_settings, NAME, onto=str(pico_llama_updated), out=out, progress=False)
    assert outcome.out_dir == out and not outcome.forced and not outcome.dry_run
    assert outcome.result is not None and outcome.result["tensors_touched"] == 4
    merged = load_file(out / "model.safetensors")
    expected = _theta_plus_delta(pico_llama_updated, llama_adapter)
    assert merged.keys() == expected.keys()
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    base = load_file(pico_llama_updated / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {f"model.layers.{i}.self_attn.{m}.weight" for i in (0, 1) for m in ("q_proj", "v_proj")}
    peft = _peft_merged(pico_llama_updated, llama_adapter)
    assert all(torch.equal(merged[k], peft[k]) for k in merged)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()

    doc = json.loads((out / "patchctl.json").read_text())
    prov = doc["provenance"]
    assert prov["patch"] == f"{NAME}==1.0.0" and prov["forced"] is False
    # the adapter the merge read stays where provenance says: <home>/adapters/<content digest>
    adapter_path = Path(doc["adapter"]["path"])
    assert adapter_path.parent == (local_settings.home / "adapters").resolve()
    assert (adapter_path / "adapter_model.safetensors").is_file()
    assert ".materialize-" not in json.dumps(outcome.plan)  # the plan names the patch, not a temporary copy
    [row] = api.show(local_settings, NAME).installs
    assert (row.id, row.format, row.forced, row.out_path) == (outcome.install_id, "merged", False, str(out))
    assert not list(local_settings.home.glob(".materialize-*"))


def test_failed_checks_refuse_install_and_write_nothing(
    settings: Settings, llama_adapter: Path, pico_llama: Path, pico_gpt2: Path, tmp_path: Path
) -> None:
    _push(settings, llama_adapter, pico_llama)
    out = tmp_path / "dest" / "out"
    with pytest.raises(CheckFailedError, match="refusing to install") as exc:
        api.install(settings, NAME, onto=str(pico_gpt2), out=out, progress=False)
    assert exc.value.exit_code == 21
    report = exc.value.report  # type: ignore[attr-defined]
    assert {r.name for r in report.failed} >= {"family", "coverage"}
    assert not (tmp_path / "dest").exists()
    assert not list(settings.home.glob(".materialize-*"))
    assert api.show(settings, NAME).installs == ()


def test_forced_install_is_recorded_as_forced(
    settings: Settings, llama_adapter: Path, pico_llama: Path, pico_llama_as_mistral: Path, tmp_path: Path
) -> None:
    _push(settings, llama_adapter, pico_llama)
    out = tmp_path / "out"
    with pytest.raises(CheckFailedError, match="family"):
        api.install(settings, NAME, onto=str(pico_llama_as_mistral), out=out, progress=False)
    outcome = api.install(settings, NAME, onto=str(pico_llama_as_mistral), out=out, force=True, progress=False)
    assert outcome.forced
    assert json.loads((out / "patchctl.json").read_text())["provenance"]["forced"] is True
    [row] = api.show(settings, NAME).installs
    assert row.forced and row.id == outcome.install_id
    merged = load_file(out / "model.safetensors")
    expected = _theta_plus_delta(pico_llama_as_mistral, llama_adapter)
    assert all(torch.equal(merged[k], expected[k]) for k in expected)


def test_unsupported_variant_is_refused_even_with_force(
    local_settings: Settings, dora_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = api.check(local_settings, str(dora_adapter), onto=str(pico_llama), progress=False).report
    assert report.status == "fail" and "format" in {r.name for r in report.failed}
    with pytest.raises(UnsupportedError, match="DoRA"):  # unsupported, not merely failing checks
        api.install(local_settings, str(dora_adapter), onto=str(pico_llama), out=out, progress=False)
    with pytest.raises(UnsupportedError, match="DoRA"):
        api.install(local_settings, str(dora_adapter), onto=str(pico_llama), out=out, force=True, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_dry_run_plans_and_writes_nothing(
    local_settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    _push(local_settings, llama_adapter, pico_llama)
    out = tmp_path / "out"
    outcome = api.install(local_settings, NAME, onto=str(pico_llama), out=out, dry_run=True, progress=False)
    assert outcome.dry_run and outcome.result is None and outcome.install_id is None
    assert outcome.out_dir == out
    assert outcome.plan is not None
    assert (outcome.plan["tensors_touched"], outcome.plan["tensors_total"]) == (4, 21)
    assert outcome.plan["adapter"] == f"{NAME}==1.0.0"
    assert not out.exists() and list(tmp_path.iterdir()) == [local_settings.home]
    assert api.show(local_settings, NAME).installs == ()
    # --out is optional for a dry run
    assert api.install(local_settings, NAME, onto=str(pico_llama), out=None, dry_run=True, progress=False).plan


def test_adapter_format_is_rebased_and_loads_with_peft(
    local_settings: Settings, llama_adapter: Path, pico_llama: Path, pico_llama_updated: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _push(local_settings, llama_adapter, pico_llama)
    out = tmp_path / "rebased"
    outcome = api.install(local_settings, NAME, onto=str(pico_llama_updated), out=out, format="adapter", progress=False)
    assert outcome.format == "adapter" and outcome.plan is None
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(pico_llama_updated)
    assert not list(out.glob("model*.safetensors"))
    [row] = api.show(local_settings, NAME).installs
    assert row.format == "adapter"

    merged = tmp_path / "merged"
    api.install(local_settings, NAME, onto=str(pico_llama_updated), out=merged, progress=False)
    ids = torch.tensor([[1, 4, 8, 15, 16, 23, 42]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(pico_llama_updated), out).eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, merged_model(ids).logits, rtol=1e-5, atol=1e-5)


def test_existing_out_is_refused_then_replaced_with_force(
    local_settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="already exists"):
        api.install(local_settings, str(llama_adapter), onto=str(pico_llama), out=out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    # refused before any work: even a base that does not exist is not looked at
    with pytest.raises(ConflictError, match="already exists"):
        api.install(local_settings, str(llama_adapter), onto=str(tmp_path / "no-base"), out=out, progress=False)
    with pytest.raises(ConflictError, match="already exists") as refused:  # --force is for checks only
        api.install(local_settings, str(llama_adapter), onto=str(pico_llama), out=out, force=True, progress=False)
    assert refused.value.hint is not None and "--overwrite" in refused.value.hint
    api.install(local_settings, str(llama_adapter), onto=str(pico_llama), out=out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]


@pytest.mark.parametrize("with_manifest", [False, True])
def test_local_adapter_dir_installs_without_catalog_rows(
    local_settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path, with_manifest: bool
) -> None:
    adapter = Path(shutil.copytree(llama_adapter, tmp_path / "adapter"))
    if with_manifest:
        _push(local_settings, llama_adapter, pico_llama)
        manifest = api.resolve(local_settings, NAME).manifest
        (adapter / "patch.json").write_text(manifest.to_json())
    outcome = api.install(local_settings, str(adapter), onto=str(pico_llama), out=tmp_path / "o", progress=False)
    assert outcome.install_id is None and outcome.check.report_id is None
    assert outcome.check.patch == str(adapter.resolve())
    lineage = next(r for r in outcome.check.report.results if r.name == "lineage")
    # with a manifest the source base is known (identical); without, lineage cannot be established
    assert (lineage.status == "pass") is with_manifest
    if with_manifest:
        details = api.show(local_settings, NAME)
        assert details.installs == () and details.compat_reports == ()
    prov = json.loads((tmp_path / "o" / "patchctl.json").read_text())["provenance"]
    assert prov["patch"] == str(adapter.resolve())


def test_yanked_pin_installs_with_warning_and_unpinned_is_not_found(
    local_settings: Settings,
    llama_adapter: Path,
    pico_llama: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _push(local_settings, llama_adapter, pico_llama)
    api.yank(local_settings, f"{NAME}==1.0.0", reason="bad labels")
    with pytest.raises(NotFoundError, match="every version of acme/sst2 is yanked"):
        api.install(local_settings, NAME, onto=str(pico_llama), out=tmp_path / "o", progress=False)
    with pytest.raises(NotFoundError, match="yanked"):
        api.check(local_settings, NAME, onto=str(pico_llama), progress=False)
    with caplog.at_level(logging.WARNING, logger="patchctl"):
        outcome = api.install(
            local_settings, f"{NAME}==1.0.0", onto=str(pico_llama), out=tmp_path / "o", progress=False
        )
    assert outcome.install_id is not None
    assert any("yanked" in r.getMessage() and "bad labels" in r.getMessage() for r in caplog.records)


def test_bad_arguments(local_settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--out"):  # a missing option: exit 2, like click's (issue 8)
        api.install(local_settings, str(llama_adapter), onto=str(pico_llama), out=None, progress=False)
    with pytest.raises(InvalidInputError, match="--format"):
        api.install(
            local_settings,
            str(llama_adapter),
            onto=str(pico_llama),
            out=tmp_path / "o",
            format="gguf",
            progress=False,  # type: ignore[arg-type]
        )
    with pytest.raises(NotFoundError):
        api.install(local_settings, str(tmp_path / "nope"), onto=str(pico_llama), out=tmp_path / "o", progress=False)
    with pytest.raises(NotFoundError):
        api.check(local_settings, "acme/missing", onto=str(pico_llama), progress=False)
    assert not (tmp_path / "o").exists()


def test_refs_resolve_exact_specifier_and_alias(
    local_settings: Settings, llama_adapter: Path, llama_adapter_v2: Path, pico_llama: Path, tmp_path: Path
) -> None:
    _push(local_settings, llama_adapter, pico_llama, "1.0.0")
    _push(local_settings, llama_adapter_v2, pico_llama, "1.1.0")
    api.alias_set(local_settings, f"{NAME}==1.0.0", "stable")
    for ref, want in (
        (NAME, "1.1.0"),
        (f"{NAME}==1.0.*", "1.0.0"),
        (f"{NAME}@stable", "1.0.0"),
        (f"{NAME}@1.1.0", "1.1.0"),
    ):
        out = tmp_path / want / ref.replace("/", "_")
        outcome = api.install(local_settings, ref, onto=str(pico_llama), out=out, progress=False)
        assert outcome.check.patch == f"{NAME}=={want}", ref
        prov = json.loads((out / "patchctl.json").read_text())["provenance"]
        assert prov["patch"] == f"{NAME}=={want}"
    v1 = load_file(tmp_path / "1.0.0" / "acme_sst2@stable" / "model.safetensors")
    v11 = load_file(tmp_path / "1.1.0" / "acme_sst2" / "model.safetensors")
    assert not torch.equal(v1["model.layers.0.self_attn.q_proj.weight"], v11["model.layers.0.self_attn.q_proj.weight"])
    assert len(api.show(local_settings, f"{NAME}==1.0.0").installs) == 2


@pytest.mark.parametrize("fixture", ["ia3_adapter", "lokr_adapter"])
def test_other_peft_types_are_refused_even_with_force(
    local_settings: Settings, pico_llama: Path, tmp_path: Path, fixture: str, request: pytest.FixtureRequest
) -> None:
    adapter: Path = request.getfixturevalue(fixture)
    out = tmp_path / "dest" / "out"
    with pytest.raises(UnsupportedError, match="not LoRA") as exc:
        api.install(local_settings, str(adapter), onto=str(pico_llama), out=out, force=True, progress=False)
    assert exc.value.exit_code == 6
    assert not (tmp_path / "dest").exists()


def test_hub_base_checked_from_headers_then_downloaded_for_install(
    hub: HubServer,
    local_settings: Settings,
    llama_adapter: Path,
    pico_llama: Path,
    pico_llama_updated: Path,
    tmp_path: Path,
) -> None:
    _push(local_settings, llama_adapter, pico_llama)
    commit = hub.seed_repo("acme/pico-llama-v2", pico_llama_updated)
    weights = (pico_llama_updated / "model.safetensors").stat().st_size
    hub.reset_counters()
    outcome = api.check(local_settings, NAME, onto="hf://acme/pico-llama-v2", progress=False)
    assert outcome.report.status == "warn"  # unrecorded lineage; every structural check passes
    assert [r.name for r in outcome.report.results if r.status != "pass"] == ["lineage"]
    assert outcome.report.base_revision == commit
    [read] = [r for r in hub.requests_for("resolve") if r.path.endswith("/model.safetensors")]
    assert read.range is not None and read.bytes_out < weights  # a range read of the header, not the weights

    out = tmp_path / "merged"
    res = api.install(local_settings, NAME, onto="hf://acme/pico-llama-v2", out=out, progress=False)
    assert res.result is not None and res.result["tensors_touched"] == 4
    expected = _theta_plus_delta(pico_llama_updated, llama_adapter)
    merged = load_file(out / "model.safetensors")
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    prov = json.loads((out / "patchctl.json").read_text())["provenance"]
    assert (prov["base_source"], prov["base_revision"]) == ("hf://acme/pico-llama-v2", commit)

    rebased = tmp_path / "rebased"
    api.install(local_settings, NAME, onto="hf://acme/pico-llama-v2", out=rebased, format="adapter", progress=False)
    cfg = json.loads((rebased / "adapter_config.json").read_text())
    assert (cfg["base_model_name_or_path"], cfg["revision"]) == ("acme/pico-llama-v2", commit)
