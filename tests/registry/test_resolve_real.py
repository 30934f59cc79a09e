"""resolve and install REQ --onto BASE with real pico models: checks run once, then read from the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import picomodels
import pytest
from catalogtools import run_cli

from patchctl import api
from patchctl.registry.resolver import NoCompatibleVersionError
from patchctl.resolving import resolve_onto
from patchctl.settings import Settings


@pytest.fixture(scope="module")
def llama_vocab128(models_dir: Path) -> Path:
    """The pico Llama with another vocabulary and a third layer: a q/v LoRA of the pico Llama fails `family` on it
    (another vocabulary alone only warns for a patch that leaves the embeddings alone)."""
    return picomodels.make_base(models_dir / "pico-llama-vocab128-resolve", "llama", vocab=128, layers=3)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.resolve(home=str(tmp_path / "home"))


def _push(settings: Settings, adapter: Path, base: Path, version: str) -> None:
    api.push(settings, adapter, base_dir=base, name="acme/p", version=version, task="t")


def test_resolve_runs_checks_once_then_reads_them(
    settings: Settings, llama_adapter: Path, pico_llama: Path, llama_vocab128: Path
) -> None:
    _push(settings, llama_adapter, pico_llama, "1.0.0")
    _push(settings, llama_adapter, llama_vocab128, "2.0.0")
    res = resolve_onto(settings, "acme/p", onto=str(pico_llama), explain=True)
    assert res.chosen == "acme/p==1.0.0"
    by = {c.ref: c for c in res.candidates}
    assert by["acme/p==1.0.0"].rank == 2 and by["acme/p==1.0.0"].check == "pass"
    assert by["acme/p==2.0.0"].rejected is not None and "unknown lineage" in by["acme/p==2.0.0"].rejected
    with api.catalog(settings) as cat:
        n = len(cat.list_compat_reports("acme/p"))
    assert n == 1  # the rejected-by-lineage candidate was not checked
    again = resolve_onto(settings, "acme/p", onto=str(pico_llama), explain=True)
    assert again == res
    with api.catalog(settings) as cat:
        assert len(cat.list_compat_reports("acme/p")) == n  # read from the catalog, not run again

    # the other base: v2 was made on it; v1 fails the family check there (really run)
    res = resolve_onto(settings, "acme/p", onto=str(llama_vocab128), allow_unrelated=True, explain=True)
    by = {c.ref: c for c in res.candidates}
    assert res.chosen == "acme/p==2.0.0"
    assert by["acme/p==1.0.0"].check == "fail" and "family" in (by["acme/p==1.0.0"].rejected or "")
    with pytest.raises(NoCompatibleVersionError) as info:
        resolve_onto(settings, "acme/p<2", onto=str(llama_vocab128), allow_unrelated=True)
    assert "acme/p==1.0.0" in info.value.message and "family" in info.value.message


def test_install_records_the_decision(
    settings: Settings, llama_adapter: Path, pico_llama: Path, llama_vocab128: Path, tmp_path: Path
) -> None:
    _push(settings, llama_adapter, pico_llama, "1.0.0")
    _push(settings, llama_adapter, llama_vocab128, "2.0.0")
    out = api.install(settings, "acme/p", onto=str(pico_llama), out=tmp_path / "out", format="adapter", progress=False)
    assert out.decision is not None and out.decision["chosen"] == "acme/p==1.0.0"
    assert out.check.patch == "acme/p==1.0.0"  # not the newest version, which was made on another base
    with api.catalog(settings) as cat:
        (rec,) = cat.list_installs("acme/p")
    assert rec.version == "1.0.0" and rec.decision == out.decision
    # an exact pin is taken as is: no decision recorded
    pinned = api.install(settings, "acme/p==1.0.0", onto=str(pico_llama), out=tmp_path / "o2", format="adapter",
                         progress=False)  # fmt: skip
    assert pinned.decision is None


def test_cli_resolve_on_a_directory(settings: Settings, llama_adapter: Path, pico_llama: Path) -> None:
    _push(settings, llama_adapter, pico_llama, "1.0.0")
    r = run_cli(["--home", str(settings.home), "resolve", "acme/p", "--onto", str(pico_llama), "--json"])
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["chosen"] == "acme/p==1.0.0"


def test_cli_install_shows_the_decision(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    _push(settings, llama_adapter, pico_llama, "1.0.0")
    args = ["--home", str(settings.home), "install", "acme/p", "--onto", str(pico_llama), "--format", "adapter"]
    r = run_cli([*args, "--out", str(tmp_path / "a"), "--json"])
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["decision"]["chosen"] == "acme/p==1.0.0"
    r = run_cli([*args, "--out", str(tmp_path / "b")])
    assert r.code == 0 and "resolved acme/p for this base: acme/p==1.0.0" in r.stderr
