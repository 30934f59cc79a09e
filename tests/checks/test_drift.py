"""``drift_report``: per-module ‖W′−W‖/‖W‖ and ‖W′−W‖/‖sBA‖, streamed with numpy, checked
against the same numbers computed with torch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from patchctl.adapter import read_adapter
from patchctl.checks import drift_report
from patchctl.schemas import CompatReport


def _expected(adapter: Path, source: Path, target: Path) -> dict[str, tuple[float, float]]:
    """(rel, ratio) per module, straight from the definitions, in float64 with torch."""
    w0, w1 = load_file(source / "model.safetensors"), load_file(target / "model.safetensors")
    ad = load_file(adapter / "adapter_model.safetensors")
    layout = read_adapter(adapter)
    out = {}
    for p in layout.pairs:
        w, w2 = w0[p.target].double(), w1[p.target].double()
        delta = p.scaling * (ad[p.b_key].double() @ ad[p.a_key].double())
        drift = torch.linalg.norm(w2 - w).item()
        out[p.module] = (drift / torch.linalg.norm(w).item(), drift / torch.linalg.norm(delta).item())
    return out


def test_identical_bases_have_no_drift(pico_llama: Path, pico_llama_sharded: Path, llama_adapter: Path) -> None:
    layout = read_adapter(llama_adapter)
    for target in (pico_llama, pico_llama_sharded):  # same weights, one file or several shards
        result = drift_report(layout, pico_llama, target)
        assert result.status == "pass", result.detail
        assert result.data["compared"] == 4 and result.data["max_rel"] == 0.0
        assert "no drift" in result.detail


@pytest.mark.parametrize("chunk_values", [7, 4 * 1024 * 1024])
def test_updated_base_drift_matches_definition(
    pico_llama: Path, llama_updated: Path, llama_adapter: Path, chunk_values: int
) -> None:
    result = drift_report(read_adapter(llama_adapter), pico_llama, llama_updated, chunk_values=chunk_values)
    want = _expected(llama_adapter, pico_llama, llama_updated)
    got = {m["module"]: (m["rel"], m["ratio"]) for m in result.data["modules"]}
    assert got.keys() == want.keys()
    for module, (rel, ratio) in want.items():
        assert got[module][0] == pytest.approx(rel, rel=1e-9)
        assert got[module][1] == pytest.approx(ratio, rel=1e-9)
    assert result.data["max_rel"] == pytest.approx(max(r for r, _ in want.values()), rel=1e-9)
    ratios = [m["ratio"] for m in result.data["modules"]]
    assert ratios == sorted(ratios, reverse=True)


def test_drift_thresholds(pico_llama: Path, llama_updated: Path, llama_adapter: Path) -> None:
    layout = read_adapter(llama_adapter)
    calm = drift_report(layout, pico_llama, llama_updated, warn_relative=10, warn_ratio=1e9)
    assert calm.status == "pass" and "over 4 modules" in calm.detail
    moved = drift_report(layout, pico_llama, llama_updated, warn_relative=1e-9)
    assert moved.status == "warn"
    assert "the base moved a lot on 4 modules" in moved.detail and "validate before use" in moved.detail
    # the result fits in a report (JSON round trip)
    report = CompatReport(
        patch="p",
        base_source=str(llama_updated),
        base_weights_sha256="0" * 64,
        results=(moved,),
        tool_version="0",
        created_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )
    assert CompatReport.from_json(report.to_json()) == report


def test_bf16_target_is_decoded(pico_llama: Path, llama_bf16: Path, llama_adapter: Path) -> None:
    # the BF16 base is the same seed as the F32 one, rounded: drift is exactly the rounding error
    result = drift_report(read_adapter(llama_adapter), pico_llama, llama_bf16)
    assert result.data["compared"] == 4
    assert 0 < result.data["max_rel"] < 2**-8


def test_modules_missing_from_a_base_warn(pico_llama: Path, llama_3layers: Path, llama_3layers_adapter: Path) -> None:
    result = drift_report(read_adapter(llama_3layers_adapter), llama_3layers, pico_llama, warn_relative=math.inf)
    assert result.status == "warn"
    assert result.data["compared"] == 4  # layers 0 and 1 (other weights: another base)
    assert len(result.data["skipped"]) == 2 and "not in target base" in result.data["skipped"][0]
