"""The model work of the demo and the benchmark: continued pretraining (θ → θ′), LoRA fine-tuning
(Δθ) and lm-eval scoring. Small and deterministic (fixed seeds, no sampling), CPU friendly.

Nothing here imports patchctl: porting (θ′ + Δθ), checks and validation go through patchctl's CLI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from transformers / datasets / lm-eval
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPT = "Review: {text}\nSentiment:"
CHOICES = ["negative", "positive"]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def quiet() -> None:
    """Keep library noise (warnings, info logs, progress bars) out of the output."""
    warnings.filterwarnings("ignore")
    for name in ("transformers", "datasets", "lm_eval", "lm-eval", "peft", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _save_atomic(model: Any, base: Path | None, out: Path, meta: dict[str, Any]) -> Path:
    """Save ``model`` to ``out`` via a temporary folder; a new base release keeps ``base``'s
    tokenizer and generation files byte for byte (as a provider's release would)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if base is not None:
        for f in base.iterdir():
            if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges"))):
                shutil.copy2(f, tmp / f.name)
    (tmp / "TRAINING.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _batches(items: list[Any], batch: int, steps: int, seed: int) -> Iterator[list[Any]]:
    import random

    rng = random.Random(seed)
    order: list[Any] = []
    for _ in range(steps):
        if len(order) < batch:
            more = list(items)
            rng.shuffle(more)
            order += more
        yield order[:batch]
        order = order[batch:]


def continued_pretraining(
    base: Path,
    out: Path,
    texts: list[str],
    *,
    kind: str = "full",
    steps: int = 30,
    batch: int = 8,
    lr: float = 2e-5,
    seq_len: int = 64,
    seed: int = 0,
) -> Path:
    """θ′: ``steps`` of next-token training of ``base`` on ``texts``; ``kind`` "full" (every weight)
    or "lora" (a rank-16 LoRA on every linear layer, merged into the weights: PortLLM's update (a)).
    Written as a normal safetensors folder (atomic)."""
    import torch

    torch.manual_seed(seed)
    model, tok = load(base)
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM")
        )
    elif kind != "full":
        raise ValueError(f"kind {kind!r}: expected 'full' or 'lora'")

    def batches() -> Iterator[tuple[Any, Any]]:
        for chunk in _batches(texts, batch, steps, seed):
            enc = tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=seq_len)
            yield enc, enc.input_ids.masked_fill(enc.attention_mask == 0, -100)

    t0 = time.perf_counter()
    losses = _train(model, batches(), lr)
    if kind == "lora":
        model = model.merge_and_unload()
    meta = {
        "what": "continued pretraining",
        "base": str(base),
        "kind": kind,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seq_len": seq_len,
        "seed": seed,
        "texts": len(texts),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return _save_atomic(model, base, out, meta)


def _train(model: Any, batches: Iterable[tuple[Any, Any]], lr: float) -> list[float]:
    """AdamW (no weight decay) over the trainable parameters, one step per (inputs, labels) batch;
    the model is left in eval mode. Returns the loss of each step."""
    import torch

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for enc, labels in batches:
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    model.eval()
    return losses


def _answer_batch(tok: Any, docs: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Inputs and labels for "prompt + ' ' + answer": the loss falls on the answer tokens only."""
    import torch

    ids, labels = [], []
    for d in docs:
        prompt = tok(PROMPT.format(text=d["text"])).input_ids
        answer = tok(" " + CHOICES[int(d["label"])], add_special_tokens=False).input_ids
        ids.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(len(x) for x in ids)
    pad = tok.pad_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    attn = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    lab = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
    return {"input_ids": input_ids, "attention_mask": attn}, lab


def finetune_lora(
    base: Path,
    out: Path,
    docs: list[dict[str, Any]],
    *,
    steps: int = 40,
    batch: int = 8,
    lr: float = 1e-3,
    rank: int = 8,
    seed: int = 0,
    targets: list[str] | None = None,
) -> Path:
    """Δθ: a PEFT LoRA adapter fine-tuned on ``base`` for the multiple-choice task (answer-only
    loss, the same prompt as the lm-eval task), saved with safetensors (atomic)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model, tok = load(base)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=targets or ["q_proj", "v_proj", "o_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    t0 = time.perf_counter()
    losses = _train(model, (_answer_batch(tok, chunk) for chunk in _batches(docs, batch, steps, seed)), lr)
    meta = {
        "what": "LoRA fine-tuning",
        "base": str(base),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "rank": rank,
        "seed": seed,
        "train_docs": len(docs),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return _save_atomic(model, None, out, meta)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """stdout and stderr (file descriptors, so child processes too) to /dev/null: lm-eval's
    progress bars and its `git` probe write there whatever the logging setup."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null, *saved):
            os.close(fd)


def task_name(task_dir: Path) -> str:
    import yaml

    for f in sorted(task_dir.glob("*.yaml")):
        return str(yaml.safe_load(f.read_text(encoding="utf-8"))["task"])
    raise FileNotFoundError(f"no task YAML in {task_dir}")


def score(model: Any, tok: Any, task_dir: Path, *, limit: int | None = None, batch_size: int = 16) -> float:
    """lm-eval's accuracy of an in-memory model on the local task folder (its data files are
    relative to the folder). No separate scorer: this is ``lm_eval.simple_evaluate``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    quiet()
    task_dir = task_dir.resolve()
    name = task_name(task_dir)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu")
    with _cwd(task_dir), _silenced():
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=[name],
            task_manager=TaskManager(include_path=str(task_dir), include_defaults=False, verbosity="ERROR"),
            limit=limit,
            bootstrap_iters=0,
            log_samples=False,
            verbosity="ERROR",
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
        )
    assert res is not None
    return float(res["results"][name]["acc,none"])


def score_dir(model_dir: Path, task_dir: Path, *, adapter: Path | None = None, limit: int | None = None) -> float:
    """lm-eval score of a model folder, with ``adapter`` merged in memory by PEFT when given."""
    model, tok = load(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()
    return score(model, tok, task_dir, limit=limit)
