"""Coverage-guided fuzz target (atheris) of every reader of untrusted files: safetensors headers,
``adapter_config.json``, a base's ``config.json`` and index, and the adapter layout built from them.

Any exception other than a :class:`~patchctl.errors.PatchctlError` is a crash. Run it directly
(``python tests/fuzz/fuzz_readers.py -runs=100000 [corpus dir]``) or through
``tests/fuzz/test_fuzz.py``, which runs it for a bounded number of executions in CI.
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from patchctl.adapter import layout_from_header, map_to_base
    from patchctl.bases import (
        family_from_config,
        parse_safetensors_header,
        read_config,
        read_safetensors_header,
        weight_file_names,
    )
    from patchctl.errors import PatchctlError
    from patchctl.schemas.peft_config import read_adapter_config

WORK = Path(tempfile.mkdtemp(prefix="patchctl-fuzz-"))
#: an input is ``<reader byte><text>[\xff\xfe<rest>]``: the reader, its file, and extra bytes
SEP = b"\xff\xfe"
_HEADER = b'{"a.lora_A.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"f":"pt"}}'
SEEDS = [
    b"\x00" + _HEADER + SEP + b"\0" * 24,
    b'\x01{"peft_type": "LORA", "r": 2, "lora_alpha": 8, "target_modules": ["q_proj"], '
    b'"rank_pattern": {"q": 2}, "alpha_pattern": {"q_proj": 4.0}}'
    + SEP
    + b'{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[2,4],'
    b'"data_offsets":[0,32]},"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":'
    b'{"dtype":"F32","shape":[4,2],"data_offsets":[32,64]}}',
    b'\x02{"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 96, '
    b'"architectures": ["LlamaForCausalLM"], "torch_dtype": "float32", "tie_word_embeddings": false}',
    b'\x03{"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors"}}',
]


def _safetensors(header_json: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header_json)) + header_json + data


def one_input(raw: bytes) -> None:
    if not raw:
        return
    which = raw[0] % 4
    text, _, rest = raw[1:].partition(SEP)
    try:
        if which == 0:  # a safetensors header from bytes, then from a file (size checks)
            header = parse_safetensors_header(_safetensors(text, rest), source="fuzz")
            path = WORK / "w.safetensors"
            path.write_bytes(_safetensors(text, rest))
            header = read_safetensors_header(path)
            assert isinstance(header, dict)
        elif which == 1:  # adapter_config.json, then the layout of a header under it
            (WORK / "adapter_config.json").write_bytes(text)
            config = read_adapter_config(WORK)
            config.unsupported_features()
            try:
                header = json.loads(rest)
            except (ValueError, RecursionError):
                header = {}
            if isinstance(header, dict):
                path = WORK / "a.safetensors"
                path.write_bytes(_safetensors(json.dumps(header).encode(), b"\0" * 64))
                header = read_safetensors_header(path)
                layout = layout_from_header(WORK, config, header)
                layout.lora_spec()
                map_to_base(layout, ["model.layers.0.self_attn.q_proj.weight", "lm_head.weight"], {})
        elif which == 2:  # a base's config.json
            (WORK / "config.json").write_bytes(text)
            family_from_config(read_config(WORK), source="fuzz")
        else:  # a base's index
            base = WORK / "base"
            base.mkdir(exist_ok=True)
            (base / "model.safetensors.index.json").write_bytes(text)
            weight_file_names(base)
    except PatchctlError:
        pass


def write_seeds(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed-{i}").write_bytes(seed)


def main(argv: list[str]) -> None:
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if dirs:
        write_seeds(Path(dirs[0]))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
