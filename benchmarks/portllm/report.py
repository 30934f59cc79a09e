"""The PortLLM benchmark's table (Markdown, stdout) and chart (results.png) from results.json."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

MODELS = ["theta", "theta+delta", "theta_prime", "theta_prime+delta", "theta_prime+delta_prime"]
LABELS = {
    "theta": "θ",
    "theta+delta": "θ+Δθ",
    "theta_prime": "θ′",
    "theta_prime+delta": "θ′+Δθ (ported)",
    "theta_prime+delta_prime": "θ′+Δθ′ (re-tuned)",
}
STEPS = {"theta_prime": "θ′", "theta_2prime": "θ″", "theta_3prime": "θ‴"}


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def table(rows: list[dict[str, Any]]) -> str:
    """One line per (task, update kind, step): mean ± sd over seeds of each model's score, plus
    the drift and the cost of porting vs fine-tuning again."""
    out = [
        "| task | update | base | θ | θ+Δθ | θ′ | θ′+Δθ (ported) | θ′+Δθ′ (re-tuned) | seeds | drift max ‖W′−W‖/‖W‖ | "
        "port s / peak MiB | re-tune s / peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tasks = sorted({r["task"] for r in rows})
    for task in tasks:
        base_rows = [r for r in rows if r["task"] == task and r["update"] == "none"]
        theta = [r["score"] for r in base_rows if r["model"] == "theta"]
        theta_d = [r["score"] for r in base_rows if r["model"] == "theta+delta"]
        combos = sorted(
            {(r["update"], r["step"]) for r in rows if r["task"] == task and r["update"] != "none"},
            key=lambda c: (c[0], list(STEPS).index(c[1])),
        )
        for update, step in combos:
            sel = [r for r in rows if r["task"] == task and r["update"] == update and r["step"] == step]
            by = {m: [r["score"] for r in sel if r["model"] == m] for m in MODELS}
            ported = [r for r in sel if r["model"] == "theta_prime+delta"]
            retuned = [r for r in sel if r["model"] == "theta_prime+delta_prime"]
            seeds = len({r["seed"] for r in ported})
            drift = _mean([r["drift_max_rel"] for r in ported if r.get("drift_max_rel") is not None])
            port = (
                f"{_mean([r['port_s'] for r in ported]) or 0:.1f} / {_mean([r['port_peak_mib'] for r in ported]) or 0:.0f}"
                if ported
                else "–"
            )
            ft = (
                f"{_mean([r['finetune_s'] for r in retuned]) or 0:.1f} / {_mean([r['finetune_peak_mib'] for r in retuned]) or 0:.0f}"
                if retuned
                else "–"
            )
            out.append(
                f"| {task} | {update} | {STEPS[step]} | {_ms(theta)} | {_ms(theta_d)} | {_ms(by['theta_prime'])} | "
                f"{_ms(by['theta_prime+delta'])} | {_ms(by['theta_prime+delta_prime'])} | {seeds} | "
                f"{'–' if drift is None else f'{drift:.4f}'} | {port} | {ft} |"
            )
    return "\n".join(out)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        combos = sorted(
            {(r["update"], r["step"]) for r in rows if r["task"] == task and r["update"] != "none"},
            key=lambda c: (c[0], list(STEPS).index(c[1])),
        )
        base_rows = [r for r in rows if r["task"] == task and r["update"] == "none"]
        groups = [("θ / θ+Δθ", {"theta": base_rows, "theta+delta": base_rows})]
        for update, step in combos:
            sel = [r for r in rows if r["task"] == task and r["update"] == update and r["step"] == step]
            groups.append((f"{update}\n{STEPS[step]}", {m: sel for m in MODELS[2:]}))
        width = 0.26
        colors = {
            "theta": "#999999",
            "theta+delta": "#1f77b4",
            "theta_prime": "#bbbbbb",
            "theta_prime+delta": "#2ca02c",
            "theta_prime+delta_prime": "#ff7f0e",
        }
        for gi, (_, models) in enumerate(groups):
            for mi, (m, sel) in enumerate(models.items()):
                vals = [r["score"] for r in sel if r["model"] == m]
                if not vals:
                    continue
                x = gi + (mi - (len(models) - 1) / 2) * width
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                ax.bar(
                    x,
                    statistics.mean(vals),
                    width,
                    yerr=sd,
                    color=colors[m],
                    capsize=3,
                    label=LABELS[m] if gi == (0 if m in ("theta", "theta+delta") else 1) else None,
                )
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
        ax.set_ylim(0.4, 1.0)
        ax.set_ylabel("lm-eval acc")
        ax.set_title(f"{task} sentiment (SmolLM2-135M-Instruct)")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(results: Path) -> None:
    data = json.loads(results.read_text(encoding="utf-8"))
    rows = data["rows"]
    print(table(rows))
    chart(rows, results.with_name("results.png"))
    print(f"\nchart: {results.with_name('results.png')}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results.json")
