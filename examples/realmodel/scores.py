"""The demo's score table: θ, θ + Δθ, θ′, θ′ + Δθ on the patch's eval set.

Usage:
  python examples/realmodel/scores.py from-validate VALIDATE_JSON
      the table from `patchctl validate REF --onto θ′ --json` (baseline recorded at push on θ)
  python examples/realmodel/scores.py lm-eval --task DIR --theta DIR --adapter DIR --theta-prime DIR --installed DIR
      scores the four models with lm-eval directly (lm_eval.simple_evaluate on an in-memory HFLM,
      the same local task folder), for comparison with `patchctl validate`'s figures.
      θ + Δθ is PEFT's merge in memory, θ′ + Δθ the folder `patchctl install` wrote.
      Scores are remembered per model content in DIR/../scores.json (second run: no re-scoring).

Both print the table on stdout and write it as JSON next to the task folder (scores-table.json).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROWS = [
    ("theta", "θ      base (the patch was trained on it)"),
    ("theta+delta", "θ + Δθ  base + patch (where it was trained)"),
    ("theta_prime", "θ′     new release (continued pretraining)"),
    ("theta_prime+delta", "θ′ + Δθ new release + ported patch (training-free)"),
]


def print_table(scores: dict[str, float | None], *, task: str, source: str) -> None:
    print(f"\n{'model':<52} {'acc':>6}   ({task}, {source})")
    for key, label in ROWS:
        v = scores.get(key)
        print(f"{label:<52} {'-' if v is None else f'{v:.3f}':>6}")
    t, td, tp, tpd = (scores.get(k) for k, _ in ROWS)
    if None not in (t, td, tp, tpd) and td != t:
        assert t is not None and td is not None and tp is not None and tpd is not None
        print(
            f"gain of the patch: {td - t:+.3f} on θ, {tpd - tp:+.3f} on θ′ "
            f"(retained {100 * (tpd - tp) / (td - t):.0f}% without training on θ′)"
        )


def _fingerprint(model_dir: Path, adapter: Path | None = None) -> str:
    """What a model's score depends on: its weight files' names, sizes and mtimes (+ the adapter's)."""
    h = hashlib.sha256()
    for d in (model_dir, adapter):
        if d is None:
            continue
        for f in sorted(d.glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _installed_fingerprint(installed: Path) -> str:
    """The install folder is rewritten on every run: its content is named by the sha256s that
    patchctl recorded in it (patchctl.json), so an identical install is not scored again."""
    meta: Any = json.loads((installed / "patchctl.json").read_text(encoding="utf-8"))
    files = meta.get("files") if isinstance(meta, dict) else None
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest() if files else _fingerprint(installed)


def lm_eval_scores(task: Path, theta: Path, adapter: Path, theta_prime: Path, installed: Path) -> dict[str, float]:
    from examples.realmodel import pipeline

    pipeline.quiet()
    cache_file = task.parent / "scores.json"
    cache: dict[str, float] = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.is_file() else {}
    task_sha = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(task.iterdir()) if f.is_file())).hexdigest()
    plan = [
        ("theta", theta, None, _fingerprint(theta)),
        ("theta+delta", theta, adapter, _fingerprint(theta, adapter)),
        ("theta_prime", theta_prime, None, _fingerprint(theta_prime)),
        ("theta_prime+delta", installed, None, _installed_fingerprint(installed)),
    ]
    out = {}
    for key, model_dir, adp, fp in plan:
        ck = f"{key}:{task_sha[:16]}:{fp[:16]}"
        if ck not in cache:
            print(f"  scoring {key} with lm-eval ...", file=sys.stderr, flush=True)
            cache[ck] = pipeline.score_dir(model_dir, task, adapter=adp)
            cache_file.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        out[key] = cache[ck]
    return out


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("from-validate")
    v.add_argument("validate_json", type=Path)
    v.add_argument("--task-dir", type=Path, required=True)
    e = sub.add_parser("lm-eval")
    for name in ("task", "theta", "adapter", "theta-prime", "installed"):
        e.add_argument(f"--{name}", type=Path, required=True)
    a = p.parse_args(argv)
    if a.cmd == "from-validate":
        data = json.loads(a.validate_json.read_text(encoding="utf-8"))
        t = data["tasks"][0]
        scores = {
            "theta": t.get("baseline_unpatched"),
            "theta+delta": t.get("baseline_patched"),
            "theta_prime": t.get("unpatched"),
            "theta_prime+delta": t.get("patched"),
        }
        task_dir, source = a.task_dir, f"patchctl validate, verdict {data.get('verdict')}"
        task_name = t.get("task", "?")
    else:
        from examples.realmodel import pipeline

        scores = lm_eval_scores(a.task, a.theta, a.adapter, a.theta_prime, a.installed)
        task_dir, source = a.task, "lm-eval directly"
        task_name = pipeline.task_name(a.task)
    print_table(scores, task=task_name, source=source)
    (task_dir.parent / "scores-table.json").write_text(
        json.dumps({"task": task_name, "source": source, "scores": scores}, indent=2), encoding="utf-8"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
