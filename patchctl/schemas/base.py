"""What patchctl knows about a base model: family, fingerprints, tensor headers.

Built from a local directory (``patchctl.bases``) or from Hub metadata (``patchctl.remotes``);
the checks read only this, so they behave the same for both.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from patchctl.schemas._common import SafeRelPath, Sha256, StrictModel

__all__ = ["BaseFacts", "Family", "TensorInfo", "WeightFile"]


class Family(StrictModel):
    """The architecture facts of a base, read from its ``config.json``."""

    model_type: str
    architectures: tuple[str, ...] = ()
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    vocab_size: int | None = None
    dtype: str | None = None
    tie_word_embeddings: bool | None = None


class TensorInfo(StrictModel):
    """One tensor of a safetensors header: dtype string as safetensors writes it (``BF16``, ``F32``...)."""

    dtype: str
    shape: tuple[int, ...]
    file: SafeRelPath


class WeightFile(StrictModel):
    path: SafeRelPath
    sha256: Sha256
    size: int = Field(ge=0)


class BaseFacts(StrictModel):
    """A base checkpoint as patchctl sees it. ``source`` is a local path or ``hf://repo``."""

    source: str
    revision: str | None = None
    weights_sha256: Sha256
    structure_sha256: Sha256
    family: Family
    config: dict[str, Any]
    weight_files: tuple[WeightFile, ...]
    tensors: dict[str, TensorInfo]
    #: sha256 over the tokenizer files present (same line format as weights), None if none
    tokenizer_sha256: Sha256 | None = None
    #: ``quantization_config.quant_method`` of config.json, if any (quantized bases are refused)
    quantization: str | None = None
    #: tensor-content fingerprint (per-tensor sha256 by name; local bases): equal for identical
    #: weights re-sharded or re-uploaded with other file metadata; None when unknown (Hub bases)
    tensors_sha256: Sha256 | None = None
