"""What patchctl knows about a base model: family, fingerprints, tensor headers.

Built from a local directory (``patchctl.bases``) or from Hub metadata (``patchctl.remotes``);
the checks read only this, so they behave the same for both.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from patchctl.schemas._common import SafeRelPath, Sha256, StrictModel

__all__ = ["BaseFacts", "Family", "FamilyDetails", "TensorInfo", "TokenizerFacts", "WeightFile"]


class FamilyDetails(StrictModel):
    """What changes the meaning of a patch beyond ``model_type`` and sizes, read from ``config.json``
    (a multimodal wrapper's ``text_config`` included). None: the key is absent (the model class's
    default applies). ``rope_scaling`` is normalised: ``type`` → ``rope_type``, ``rope_theta`` moved
    out, transformers-5 ``rope_parameters`` read the same way, ``{"rope_type": "default"}`` → None.
    ``sliding_window`` is None where ``use_sliding_window`` is false."""

    text_model_type: str | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int | None = None
    rope_theta: float | None = None
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int | None = None
    sliding_window: int | None = None
    hidden_act: str | None = None
    norm_eps: float | None = None
    #: ``bos_token_id``/``eos_token_id``/``pad_token_id`` of config.json (lists for several)
    special_token_ids: dict[str, int | tuple[int, ...]] = Field(default_factory=dict)


class Family(StrictModel):
    """The architecture facts of a base, read from its ``config.json``."""

    model_type: str
    architectures: tuple[str, ...] = ()
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    vocab_size: int | None = None
    dtype: str | None = None
    tie_word_embeddings: bool | None = None
    #: None in manifests written before patchctl recorded these facts (they are then not compared)
    details: FamilyDetails | None = None


class TokenizerFacts(StrictModel):
    """What gives tokens their ids, fingerprinted from the tokenizer files (``patchctl.tokenids``).

    ``vocab_sha256``: the id → token table of the base vocabulary (tokenizer.json's model vocab,
    else tokenizer.model's pieces, else vocab.json). ``segmentation_sha256``: how text is split
    into those tokens (BPE merges; Unigram/sentencepiece scores and piece types), from ``kind``'s
    file. ``added_tokens``: id → content of the added (special) tokens (None past 4096, then only
    ``added_tokens_sha256`` tells). ``special_tokens``: role (bos/eos/pad/unk...) → id from
    tokenizer_config.json. ``info``: facts that do not change ids (a chat template's sha256,
    ``model_max_length``, the sorted keys of tokenizer_config.json...), reported as information.
    """

    kind: str
    num_tokens: int = Field(ge=0)
    vocab_sha256: Sha256
    segmentation_sha256: Sha256 | None = None
    added_tokens_sha256: Sha256
    added_tokens: dict[int, str] | None = None
    special_tokens: dict[str, int] = Field(default_factory=dict)
    info: dict[str, str] = Field(default_factory=dict)


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
    #: token-id fingerprint of the tokenizer files, None if there are none (or none patchctl reads)
    tokenizer: TokenizerFacts | None = None
    #: ``quantization_config.quant_method`` of config.json, if any (quantized bases are refused)
    quantization: str | None = None
    #: tensor-content fingerprint (per-tensor sha256 by name; local bases): equal for identical
    #: weights re-sharded or re-uploaded with other file metadata; None when unknown (Hub bases)
    tensors_sha256: Sha256 | None = None
