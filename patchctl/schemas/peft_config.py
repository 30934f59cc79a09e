"""A tolerant reader of PEFT's ``adapter_config.json``.

PEFT adds keys release after release, so unknown keys are ignored (with a debug log) while
the keys a merge depends on are checked. Features patchctl cannot merge exactly are listed
by :meth:`AdapterConfig.unsupported_features` so that checks can refuse them by name.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from patchctl.errors import AdapterError, UnsupportedError
from patchctl.schemas._common import format_validation_error

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "AdapterConfig", "read_adapter_config"]

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

_KNOWN_KEYS = {
    "peft_type", "task_type", "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern",
    "target_modules", "exclude_modules", "modules_to_save", "fan_in_fan_out", "bias", "lora_bias",
    "use_dora", "base_model_name_or_path", "revision", "layers_to_transform", "layers_pattern",
    "lora_dropout", "init_lora_weights", "inference_mode", "auto_mapping", "layer_replication",
    "megatron_config", "megatron_core", "loftq_config", "eva_config", "corda_config", "use_qalora",
    "qalora_group_size", "target_parameters", "trainable_token_indices", "alora_invocation_tokens",
    "peft_version", "runtime_config", "ensure_weight_tying", "lora_ga_config",
}  # fmt: skip
# known keys that select a LoRA variant whose merge differs from W + s·B·A
#: the largest |lora_alpha| accepted: far above any trained adapter's, far below an overflow
MAX_ALPHA = 1e6
_VARIANT_KEYS = ("arrow_config", "use_bdlora", "kasa_config", "monteclora_config", "velora_config")
#: ``init_lora_weights`` values whose init leaves the base as it is (checked in PEFT 0.21.2's
#: ``LoraLayer.update_layer``: they only set A and B, which the saved weights then overwrite)
_PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica")
#: inits that rewrite the base weight at load (W - B·A, or a quantized residual): the adapter is
#: relative to that rewritten base, not to θ, so W′ + B·A would be wrong even on θ itself
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "lora_ga", "loftq")


class AdapterConfig(BaseModel):
    """The parts of a PEFT adapter config that patchctl reads. Frozen; unknown keys ignored."""

    # allow_inf_nan=False: ``"lora_alpha": Infinity`` would merge a model of inf/NaN (issue 8)
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    peft_type: str
    task_type: str | None = None
    r: int = Field(default=8, gt=0)
    lora_alpha: float = 8
    use_rslora: bool = False
    rank_pattern: dict[str, int] = Field(default_factory=dict)
    alpha_pattern: dict[str, float] = Field(default_factory=dict)
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    fan_in_fan_out: bool = False
    bias: str = "none"
    lora_bias: bool = False
    use_dora: bool = False
    base_model_name_or_path: str | None = None
    revision: str | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    layer_replication: list[list[int]] | None = None
    use_qalora: bool = False
    target_parameters: list[str] | None = None
    init_lora_weights: bool | str = True
    trainable_token_indices: Any = None
    alora_invocation_tokens: Any = None
    #: the config as read, for writing a rebased adapter without losing keys
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)

    @field_validator("peft_type")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @field_validator("bias")
    @classmethod
    def _bias(cls, v: str) -> str:
        if v not in ("none", "all", "lora_only"):
            raise ValueError("must be 'none', 'all' or 'lora_only'")
        return v

    @field_validator("lora_alpha")
    @classmethod
    def _alpha_in_range(cls, v: float) -> float:
        if abs(v) > MAX_ALPHA:
            raise ValueError(f"must be finite and at most {MAX_ALPHA:g} in magnitude")
        return v

    @field_validator("alpha_pattern")
    @classmethod
    def _alphas_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        for key, alpha in v.items():
            if not math.isfinite(alpha) or abs(alpha) > MAX_ALPHA:
                raise ValueError(f"{key!r}: {alpha!r} must be finite and at most {MAX_ALPHA:g} in magnitude")
        return v

    @field_validator("rank_pattern")
    @classmethod
    def _ranks_positive(cls, v: dict[str, int]) -> dict[str, int]:
        for key, rank in v.items():
            if rank <= 0:
                raise ValueError(f"{key!r}: rank {rank} must be positive")
        return v

    @property
    def is_lora(self) -> bool:
        return self.peft_type == "LORA"

    def unsupported_features(self) -> list[str]:
        """Reasons this adapter cannot be merged exactly by patchctl (empty if it can)."""
        reasons = []
        if not self.is_lora:
            reasons.append(f"peft_type {self.peft_type} is not LoRA (only LORA patches are supported)")
        if self.use_dora:
            reasons.append("DoRA (use_dora=true) is not supported: its merge needs the weight norm")
        if self.layer_replication:
            reasons.append("layer_replication is not supported")
        if self.use_qalora:
            reasons.append("QALoRA (use_qalora=true) is not supported")
        if (init := self.init_problem()) is not None:
            reasons.append(init)
        if self.trainable_token_indices:
            reasons.append("trainable_token_indices (trainable tokens) is not supported")
        if self.alora_invocation_tokens:
            reasons.append("aLoRA (alora_invocation_tokens) is not supported")
        for key in sorted(set(self.raw) - _KNOWN_KEYS):
            value = self.raw[key]
            if value not in (None, False, 0, "", [], {}):
                reasons.append(
                    f"unknown adapter_config key {key}={value!r}: a LoRA variant patchctl does not know "
                    "(refusing rather than merging it wrongly)"
                )
        for key in _VARIANT_KEYS:
            if self.raw.get(key) not in (None, False, 0, "", [], {}):
                reasons.append(f"{key} is set: this LoRA variant is not supported")
        return reasons

    def init_problem(self) -> str | None:
        """Why ``init_lora_weights`` makes this adapter unportable (None when the init leaves θ as it is).

        PiSSA, OLoRA, CorDA and LoRA-GA subtract their initial B·A from the base when PEFT loads
        the adapter (LoftQ replaces it with a quantized residual): such an adapter is a delta on
        that rewritten base, never on θ′. PEFT converts the first four to a plain LoRA at save time.
        """
        init = self.init_lora_weights
        if isinstance(init, bool) or init.lower() in _PLAIN_INITS:
            return None
        name = next((p for p in _BASE_REWRITING_INITS if init.lower().startswith(p)), None)
        if name == "loftq":
            return (
                "init_lora_weights='loftq': a LoftQ adapter is relative to the quantized residual base it was "
                "trained with, not to θ; it cannot be ported (train a plain LoRA, or install onto that base)"
            )
        if name is not None:
            return (
                f"init_lora_weights={init!r}: this init rewrites the base when PEFT loads the adapter "
                "(W - B·A), so the adapter is not a delta on θ; fix: convert it to a plain LoRA when saving, "
                "model.save_pretrained(out, path_initial_model_for_weight_conversion=<dir of the adapter saved "
                "before training, with init_lora_weights=True>) (PEFT's PiSSA/OLoRA/CorDA/LoRA-GA conversion)"
            )
        return f"init_lora_weights={init!r} is an init patchctl does not know (it may rewrite the base); refusing"

    def require_lora(self) -> None:
        """Raise :class:`UnsupportedError` naming the first reason this adapter is not plain LoRA."""
        reasons = self.unsupported_features()
        if reasons:
            raise UnsupportedError("; ".join(reasons))

    def _pattern_value(self, pattern: dict[str, Any], module: str, default: Any) -> Any:
        # exactly PEFT's peft.utils.other.get_pattern_key: the first key that matches the end
        # of the module name (keys are regexes) wins
        for key, value in pattern.items():
            try:
                if re.match(rf"(.*\.)?({key})$", module):
                    return value
            except re.error:
                continue
        return default

    def rank_for(self, module: str) -> int:
        return int(self._pattern_value(self.rank_pattern, module, self.r))

    def alpha_for(self, module: str) -> float:
        return float(self._pattern_value(self.alpha_pattern, module, self.lora_alpha))

    def scaling_for(self, module: str) -> float:
        """s = alpha/r, or alpha/sqrt(r) with rslora, honouring rank/alpha patterns."""
        r = self.rank_for(module)
        alpha = self.alpha_for(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r  # as PEFT: math.sqrt, not r**0.5


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    """``json.loads`` hook for ``NaN``/``Infinity``/``-Infinity`` (not JSON, but Python writes them)."""
    raise _NonFinite(f"non-finite number {name} (every number in the config must be finite)")


def read_adapter_config(adapter_dir: Path) -> AdapterConfig:
    """Read ``adapter_config.json`` of a PEFT adapter directory; raise AdapterError if unusable."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise AdapterError(f"{adapter_dir}: no {ADAPTER_CONFIG} (is this a PEFT adapter directory?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except _NonFinite as exc:
        raise AdapterError(f"{path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AdapterError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    if "peft_type" not in raw:
        raise AdapterError(f"{path}: missing required key 'peft_type'")
    if str(raw.get("peft_type", "")).upper() == "LORA" and "r" not in raw:
        raise AdapterError(f"{path}: missing required key 'r' for a LoRA adapter")
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        log.debug("%s: ignoring unknown keys %s", path, ", ".join(unknown))
    try:
        return AdapterConfig.model_validate({**raw, "raw": raw})
    except ValidationError as exc:
        raise AdapterError(format_validation_error(exc, str(path))) from None
