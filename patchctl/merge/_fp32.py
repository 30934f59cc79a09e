"""Tensors the model class keeps in fp32 (``_keep_in_fp32_modules``, e.g. T5's ``wo``).

transformers loads a half-precision checkpoint with those tensors upcast to fp32 (its "dtype
plan": ``_keep_in_fp32_modules`` when the load dtype is fp16, ``_keep_in_fp32_modules_strict``
for fp16 and bf16). PEFT then merges them in fp32 and ``save_pretrained`` writes them as fp32.
The merge mirrors that for the tensors it touches: read the base's half-precision values, upcast
(exactly), add the fp32 delta, write fp32. Untouched ones are copied as they are (transformers
upcasts them at load, so the loaded models are the same).

The dtype plan is transformers' own (``PreTrainedModel._get_dtype_plan`` of the base's
architecture, built on the meta device: no weights read), matched against tensor names as
transformers matches it (a regex search of the patterns, ``*`` as ``.*``). Building it imports the
architecture's modeling code (seconds), so the answer is kept: in this process, and on disk in
the user's cache directory (``Settings.dtype_plan_cache_dir``) keyed by the transformers version,
the dtype and the config's content; and ``install`` computes it on a background thread while the base is fingerprinted
(:func:`warm`).

Most architectures keep nothing in fp32, and that can be proved from transformers' source without
importing it (:func:`_proved_empty`): the architecture's class is defined in its model's modeling
file, which never names ``_keep_in_fp32_modules``, imports no other model's code and builds no
sub-model through the auto classes. Such a plan is empty in any transformers version (the attribute
defaults to ``None`` on ``PreTrainedModel``, and only a model class or its sub-models set it), so
no model is built, nothing is cached, and the install's merge can start in a child process at once
(:func:`known`). Anything else (T5, mixture-of-experts gates, multimodal models, remote code) is
computed as above.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["fp32_patterns", "known", "load_dtype", "matches_fp32", "warm"]

log = logging.getLogger(__name__)

_CONFIG_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "half": "F16", "float": "F32"}


def load_dtype(config: Mapping[str, Any], tensor_dtypes: list[str]) -> str | None:
    """The dtype transformers loads the base in by default (``dtype="auto"``): the config's
    ``dtype``/``torch_dtype``, else the checkpoint's first floating dtype."""
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if isinstance(value, str) and value in _CONFIG_DTYPES:
            return _CONFIG_DTYPES[value]
    return next((d for d in tensor_dtypes if d in ("F16", "BF16", "F32", "F64")), None)


Plan = tuple[tuple[str, ...], str | None]

#: answers already computed in this process (a key of :func:`_key` -> (patterns, problem))
_memo: dict[str, Plan] = {}
#: one computation at a time: a caller waits for the one in flight (e.g. :func:`warm`'s) and reuses it
_lock = threading.Lock()


def _key(config: Mapping[str, Any], dtype: str) -> str | None:
    """What the dtype plan depends on: the transformers version, the dtype, the config's content."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tf = version("transformers")
    except PackageNotFoundError:
        return None
    text = json.dumps([tf, dtype, config], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fp32_patterns(
    base_dir: Path, config: Mapping[str, Any], dtype: str | None, *, cache_dir: Path | None = None
) -> Plan:
    """``(patterns, problem)``: the dtype-plan patterns of tensors transformers keeps in fp32 when
    loading this base in ``dtype``; ``problem`` says why they could not be determined (then none).
    ``cache_dir`` keeps answers across processes (see the module doc)."""
    if dtype not in ("F16", "BF16"):
        return (), None
    archs = config.get("architectures") or []
    if not archs:
        return (), "config.json names no architecture: _keep_in_fp32_modules not known"
    key = _key(config, dtype)
    if key is None:
        return (), "transformers is not installed: _keep_in_fp32_modules not known"
    with _lock:
        if key in _memo:
            return _memo[key]
        if _proved_empty(config):
            _memo[key] = (), None
            return _memo[key]
        cached = _read_cached(cache_dir / f"{key}.json") if cache_dir is not None else None
        plan = cached if cached is not None else _compute(base_dir, str(archs[0]), dtype)
        _memo[key] = plan
        if cache_dir is not None and cached is None and plan[1] is None:
            _write_cached(cache_dir / f"{key}.json", plan[0])
    return plan


def _read_cached(path: Path) -> Plan | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    patterns = data.get("patterns") if isinstance(data, dict) else None
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        return None
    return tuple(patterns), None


def _write_cached(path: Path, patterns: tuple[str, ...]) -> None:
    """Atomically (a concurrent install reads a whole file or none); a failure only costs time."""
    from patchctl._fs import atomic_write_text

    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps({"patterns": list(patterns)}))


def _base_dtype(base_dir: Path) -> tuple[dict[str, Any], str | None]:
    """A local base's config and the dtype transformers loads it in (:func:`load_dtype`)."""
    from patchctl.bases import read_config, read_safetensors_header, weight_file_names

    config = read_config(base_dir)
    files = weight_file_names(base_dir)
    header = read_safetensors_header(base_dir / files[0]) if files else {}
    return config, load_dtype(config, [str(i["dtype"]) for n, i in header.items() if n != "__metadata__"])


def known(base_dir: Path, cache_dir: Path | None = None) -> bool:
    """Whether :func:`fp32_patterns` answers for a local base without building the model (no
    transformers import): not needed (not half precision, no architecture), proved empty from
    transformers' source (:func:`_proved_empty`), or remembered here or in ``cache_dir``."""
    try:
        config, dtype = _base_dtype(base_dir)
    except Exception:  # the install's own reads report it
        return True
    key = _key(config, dtype) if dtype in ("F16", "BF16") and config.get("architectures") else None
    return (
        key is None
        or key in _memo
        or _proved_empty(config)
        or (cache_dir is not None and _read_cached(cache_dir / f"{key}.json") is not None)
    )


def warm(base_dir: Path, cache_dir: Path | None = None) -> None:
    """Compute (or load) the dtype plan of a local base ahead of :func:`fp32_patterns`' caller, in
    the dtype it will be loaded in; meant for a background thread. Errors are left to the caller's
    own call, which raises them where they belong."""
    with contextlib.suppress(Exception):
        config, dtype = _base_dtype(base_dir)
        fp32_patterns(base_dir, config, dtype, cache_dir=cache_dir)


#: a relative import of another model's package (``from ..llama.modeling_llama import``: two dots, a
#: name), an absolute one, or a dynamic one: that model's classes may keep modules in fp32
_OTHER_MODEL_CODE = re.compile(
    r"^\s*from\s+\.\.[A-Za-z_]|transformers\.models\.|import_module|__import__", re.MULTILINE
)
#: sub-models built from a sub-config (``AutoModel.from_config(config.vision_config)``)
_SUB_MODELS = ("AutoModel", "from_config")


@functools.lru_cache(maxsize=8)  # known(), warm() and the plan ask in turn during one install
def _modeling_source(model_type: str) -> str | None:
    """The text of transformers' ``models/<type>/modeling_<type>.py``, found without importing
    transformers; None where there is none."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    name = model_type.replace("-", "_")
    if not re.fullmatch(r"[a-z0-9_]+", name):
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / name / f"modeling_{name}.py"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return path.read_text(encoding="utf-8")
    return None


def _proved_empty(config: Mapping[str, Any]) -> bool:
    """Whether transformers keeps no module of this base in fp32, proved from its source text (the
    module doc): False means "not proved", and the plan is then computed."""
    archs = config.get("architectures") or []
    model_type = config.get("model_type")
    if len(archs) != 1 or not isinstance(archs[0], str) or not isinstance(model_type, str):
        return False
    if "auto_map" in config or any(isinstance(v, Mapping) and "model_type" in v for v in config.values()):
        return False  # remote code, or a composite model whose sub-configs name other models
    text = _modeling_source(model_type)
    if text is None or not re.search(rf"^class {re.escape(archs[0])}\(", text, re.MULTILINE):
        return False
    if "_keep_in_fp32_modules" in text or _OTHER_MODEL_CODE.search(text):
        return False
    return not any(word in text for word in _SUB_MODELS)


def _compute(base_dir: Path, arch: str, dtype: str) -> Plan:
    archs = [arch]
    try:
        import torch
        import transformers
    except ImportError:
        return (), "transformers is not installed: _keep_in_fp32_modules not known"
    cls = getattr(transformers, str(archs[0]), None)
    if cls is None:
        return (), f"{archs[0]} is not a transformers class: _keep_in_fp32_modules not known"
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(base_dir))
        with torch.device("meta"):
            model = cls(cfg)
        plan = model._get_dtype_plan(torch.float16 if dtype == "F16" else torch.bfloat16)
    except Exception as exc:  # a model that cannot be built from its config here: say so, do not guess
        log.debug("dtype plan of %s failed: %r", archs[0], exc)
        return (), f"{archs[0]}: the model could not be built to read _keep_in_fp32_modules ({type(exc).__name__})"
    return tuple(p for p, d in plan.items() if d == torch.float32), None


def matches_fp32(patterns: tuple[str, ...], name: str) -> bool:
    """transformers' matching of a tensor name against its dtype plan (core_model_loading)."""
    return any(re.search(p.replace("*", ".*"), name) for p in patterns)
