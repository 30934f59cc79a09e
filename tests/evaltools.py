"""Eval-set helpers for tests: a pico base lm-eval can run on, a tiny multiple-choice task folder,
and LoRA patches trained for a few steps to prefer one answer (real training, real PEFT)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import picomodels
import torch

TASK = "pico_choice"
#: the answer every example's gold choice is, and the wrong one
GOOD, BAD = "w4", "w5"


def make_eval_base(out: Path, *, seed: int = 0, vocab: int = picomodels.VOCAB, layers: int = 2) -> Path:
    """A pico Llama whose tokenizer names its special tokens (lm-eval needs a prefix/eos token)."""
    picomodels.make_base(out, seed=seed, vocab=vocab, layers=layers)
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": 64,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
            }
        ),
        encoding="utf-8",
    )
    return out


def _contexts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(10, 90)}" for _ in range(3)) for _ in range(n)]


def make_eval_folder(out: Path, *, n: int = 12, extra_yaml: str = "", task: str = TASK) -> Path:
    """An lm-eval task folder: one YAML (dataset_path: json, data_files relative) + data.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"q": q, "choices": [GOOD, BAD], "label": 0} for q in _contexts(n, seed=3)]
    (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / f"{task}.yaml").write_text(
        f"""task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{q}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
{extra_yaml}""",
        encoding="utf-8",
    )
    return out


def train_preference_adapter(base: Path, out: Path, *, prefer: str = GOOD, steps: int = 40, seed: int = 0) -> Path:
    """A LoRA trained for a few Adam steps to answer ``prefer`` after any three-word context."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], task_type="CAUSAL_LM"
        ),
    )
    opt = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=5e-2)
    target = tok.convert_tokens_to_ids(prefer)
    ctx = _contexts(64, seed=11)  # other contexts than the eval set's
    ids = torch.tensor([tok(c)["input_ids"] for c in ctx])
    peft_model.train()
    for _ in range(steps):
        logits = peft_model(input_ids=ids).logits[:, -1, :]
        loss = torch.nn.functional.cross_entropy(logits, torch.full((len(ctx),), target))
        opt.zero_grad()
        loss.backward()
        opt.step()
    peft_model.eval()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    return out
