import json
import logging
import math
from pathlib import Path

import pytest

from patchctl.errors import AdapterError, UnsupportedError
from patchctl.schemas.peft_config import read_adapter_config


def _write(tmp_path: Path, cfg: object) -> Path:
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)
    return tmp_path


def test_reads_real_peft_config(llama_adapter: Path) -> None:
    cfg = read_adapter_config(llama_adapter)
    assert cfg.is_lora and cfg.r == 4 and cfg.lora_alpha == 8
    assert cfg.unsupported_features() == []
    assert cfg.scaling_for("model.layers.0.self_attn.q_proj") == 2.0


def test_unknown_keys_are_ignored_with_debug_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        cfg = read_adapter_config(_write(tmp_path, {"peft_type": "LORA", "r": 8, "brand_new_key": None}))
    assert cfg.r == 8
    assert "brand_new_key" in caplog.text
    assert cfg.unsupported_features() == []


def test_unknown_truthy_key_is_an_unsupported_variant(tmp_path: Path) -> None:
    cfg = read_adapter_config(_write(tmp_path, {"peft_type": "LORA", "r": 8, "fancy_variant_config": {"x": 1}}))
    assert any("fancy_variant_config" in r for r in cfg.unsupported_features())
    with pytest.raises(UnsupportedError):
        cfg.require_lora()


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ("{nope", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"r": 8}, "peft_type"),
        ({"peft_type": "LORA"}, "'r'"),
        ({"peft_type": "LORA", "r": 0}, "r"),
        ({"peft_type": "LORA", "r": 8, "bias": "sometimes"}, "bias"),
    ],
)
def test_bad_configs(tmp_path: Path, cfg: object, needle: str) -> None:
    with pytest.raises(AdapterError) as exc:
        read_adapter_config(_write(tmp_path, cfg))
    assert needle in str(exc.value)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"no adapter_config\.json"):
        read_adapter_config(tmp_path)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"peft_type": "IA3"}, "not LoRA"),
        ({"layer_replication": [[0, 1]]}, "layer_replication"),
        ({"init_lora_weights": "pissa"}, "path_initial_model_for_weight_conversion"),
    ],
)
def test_unsupported_variants_are_named(tmp_path: Path, extra: dict[str, object], reason: str) -> None:
    cfg = read_adapter_config(_write(tmp_path, {"peft_type": "LORA", "r": 8, **extra}))
    with pytest.raises(UnsupportedError, match=reason):
        cfg.require_lora()


def test_scaling_matches_peft_rules(tmp_path: Path) -> None:
    cfg = read_adapter_config(
        _write(
            tmp_path,
            {
                "peft_type": "LORA",
                "r": 8,
                "lora_alpha": 16,
                "use_rslora": True,
                "rank_pattern": {"v_proj": 4, r"layers\.1\..*q_proj": 2},
                "alpha_pattern": {"o_proj": 4},
            },
        )
    )
    assert cfg.scaling_for("model.layers.0.self_attn.k_proj") == pytest.approx(16 / math.sqrt(8))
    assert cfg.scaling_for("model.layers.0.self_attn.v_proj") == pytest.approx(16 / 2)
    assert cfg.rank_for("model.layers.1.self_attn.q_proj") == 2
    assert cfg.rank_for("model.layers.0.self_attn.q_proj") == 8
    assert cfg.alpha_for("model.layers.0.self_attn.o_proj") == 4
