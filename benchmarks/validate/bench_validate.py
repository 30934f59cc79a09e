"""Benchmark: `patchctl ci` over K patches on one base vs K runs of `lm_eval --model hf
--model_args pretrained=BASE,peft=ADAPTER`; `patchctl validate` of one patch vs one such run.

Everything is generated: a Llama-shaped base (random weights, a word-level tokenizer), a
multiple-choice lm-eval task folder with local data, K random rank-8 LoRA patches (PEFT). Each
measured command is a fresh subprocess (imports included, as a CI job pays them), run one after
the other on the same machine; wall time from time.monotonic().

    python benchmarks/validate/bench_validate.py                  # tiny base, K = 8
    python benchmarks/validate/bench_validate.py --size pico --k 2 --examples 12   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = {
    # hidden, intermediate, layers, heads, kv heads, vocab
    "pico": (32, 64, 2, 4, 2, 96),
    "tiny": (512, 1376, 8, 8, 4, 4000),
    "small": (1024, 2816, 12, 16, 4, 8000),
}
TASK = "bench_choice"


def make_base(out: Path, size: str) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, inter, layers, heads, kv, vocab = SIZES[size]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=256,
                      tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    model = AutoModelForCausalLM.from_config(cfg).eval()
    out.mkdir(parents=True)
    model.save_pretrained(out)
    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(vocab - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 256, "bos_token": "<s>",
        "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}))  # fmt: skip
    return out


def make_eval(out: Path, examples: int, vocab: int) -> Path:
    rng = random.Random(0)
    out.mkdir(parents=True)
    rows = []
    for _ in range(examples):
        q = " ".join(f"w{rng.randrange(10, vocab - 4)}" for _ in range(24))
        rows.append({"q": q, "choices": [f"w{rng.randrange(10, vocab - 4)}" for _ in range(4)], "label": 0})
    (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\ntest_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "{{q}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return out


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.02)
    peft_model.save_pretrained(out)
    return out


def timed(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 22):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def lm_eval_cmd(base: Path, adapter: Path, folder: Path, out: Path, batch_size: int, limit: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={base},peft={adapter}",
           "--tasks", TASK, "--include_path", str(folder), "--batch_size", str(batch_size), "--device", "cpu",
           "--output_path", str(out)]  # fmt: skip
    return cmd + (["--limit", str(limit)] if limit else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-validate-", dir=args.workdir))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(work / "hf"),
           "PATCHCTL_HOME": str(work / "home"), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    try:
        base = make_base(work / "base", args.size)
        folder = make_eval(work / "eval", args.examples, SIZES[args.size][5])
        adapters = [make_adapter(base, work / f"lora{i}", seed=i) for i in range(args.k)]
        patchctl = [sys.executable, "-m", "patchctl"]
        for i, a in enumerate(adapters):
            timed([*patchctl, "push", str(a), "--name", f"bench/p{i}", "--version", "1.0.0", "--task", "bench",
                   "--base", str(base), "--eval", str(folder), "--no-baseline"], env=env)  # fmt: skip
        bs = ["--batch-size", str(args.batch_size)]
        ci_wall, ci_out = timed([*patchctl, "ci", "--onto", str(base), *bs, "--device", "cpu", "--json"], env=env)
        ci_scores = {
            r["patch"].split("==")[0]: r["validation"]["tasks"][0]["patched"] for r in json.loads(ci_out)["results"]
        }
        lm_walls, lm_scores = [], {}
        for i, a in enumerate(adapters):
            out = work / f"lm-eval-{i}"
            wall, _ = timed(lm_eval_cmd(base, a, folder, out, args.batch_size, None), cwd=folder, env=env)
            lm_walls.append(wall)
            [res] = list(out.rglob("results_*.json"))
            lm_scores[f"bench/p{i}"] = json.loads(res.read_text())["results"][TASK]["acc,none"]
        val_wall, val_out = timed(
            [*patchctl, "validate", "bench/p0", "--onto", str(base), *bs, "--device", "cpu", "--json"], env=env
        )
        result: dict[str, Any] = {
            "size": args.size,
            "parameters": None,
            "k": args.k,
            "examples": args.examples,
            "batch_size": args.batch_size,
            "ci_wall_s": round(ci_wall, 2),
            "lm_eval_walls_s": [round(w, 2) for w in lm_walls],
            "lm_eval_total_s": round(sum(lm_walls), 2),
            "ci_ratio": round(ci_wall / sum(lm_walls), 3),
            "validate_wall_s": round(val_wall, 2),
            "lm_eval_one_s": round(lm_walls[0], 2),
            "validate_ratio": round(val_wall / lm_walls[0], 3),
            "scores_ci": ci_scores,
            "scores_lm_eval_peft": lm_scores,
            "validate_patched": json.loads(val_out)["tasks"][0]["patched"],
        }
        from safetensors import safe_open

        with safe_open(str(base / "model.safetensors"), framework="pt") as f:
            result["parameters"] = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
