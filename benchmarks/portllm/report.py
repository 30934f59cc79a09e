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


def _cost(rows: list[dict[str, Any]], what: str) -> str:
    """Mean wall seconds, CPU seconds and peak RSS of the children that did ``what`` (port, finetune)."""
    if not rows:
        return "–"
    parts = []
    for key, fmt in ((f"{what}_s", ".1f"), (f"{what}_cpu_s", ".1f"), (f"{what}_peak_mib", ".0f")):
        mean = _mean([r[key] for r in rows if isinstance(r.get(key), (int, float))])
        parts.append("–" if mean is None else format(mean, fmt))
    return " / ".join(parts)


def table(rows: list[dict[str, Any]]) -> str:
    """One line per (task, update kind, step): mean ± sd over seeds of each model's score, plus
    the drift and the cost of porting vs fine-tuning again."""
    out = [
        "| task | update | base | θ | θ+Δθ | θ′ | θ′+Δθ (ported) | θ′+Δθ′ (re-tuned) | seeds | drift max ‖W′−W‖/‖W‖ | "
        "port: wall s, CPU s, peak MiB | re-tune: wall s, CPU s, peak MiB |",
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
            port = _cost(ported, "port")
            ft = _cost(retuned, "finetune")
            out.append(
                f"| {task} | {update} | {STEPS[step]} | {_ms(theta)} | {_ms(theta_d)} | {_ms(by['theta_prime'])} | "
                f"{_ms(by['theta_prime+delta'])} | {_ms(by['theta_prime+delta_prime'])} | {seeds} | "
                f"{'–' if drift is None else f'{drift:.4f}'} | {port} | {ft} |"
            )
    return "\n".join(out)


def ports(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per port (task, seed, update, step): its drift figures and what it lost: ``gap`` =
    score(θ′+Δθ′) − score(θ′+Δθ) (re-tuning's advantage over porting) and ``kept`` = the gain of
    the ported patch over θ′ minus the patch's gain on θ."""

    def score(model: str, key: dict[str, Any]) -> float | None:
        hit = [x["score"] for x in rows if x["model"] == model and all(x.get(k) == v for k, v in key.items())]
        return hit[0] if hit else None

    out = []
    for r in rows:
        if r["model"] != "theta_prime+delta":
            continue
        same = {k: r[k] for k in ("task", "seed", "update", "step")}
        retuned, prime = score("theta_prime+delta_prime", same), score("theta_prime", same)
        on_theta = {"task": r["task"], "seed": r["seed"], "update": "none"}
        theta, theta_d = score("theta", on_theta), score("theta+delta", on_theta)
        out.append(
            {
                **same,
                "drift_max_rel": r.get("drift_max_rel"),
                "drift_mean_rel": r.get("drift_mean_rel"),
                "drift_mean_ratio": r.get("drift_mean_ratio"),
                "gap": None if retuned is None else retuned - r["score"],
                "kept": None if None in (prime, theta, theta_d) else (r["score"] - prime) - (theta_d - theta),  # type: ignore[operator]
            }
        )
    return out


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None below 4 points or without spread."""
    if len(xs) < 4:
        return None

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return None
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = sum((a - mx) ** 2 for a in rx) ** 0.5
    sy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (sx * sy)


def drift_table(rows: list[dict[str, Any]]) -> str:
    """Does drift predict the lost score? Every port with its drift and its gap to re-tuning, and
    the rank correlation of each drift figure with the gap and with the kept gain."""
    ps = [p for p in ports(rows) if p["drift_mean_rel"] is not None]
    lines = [
        "| task | seed | update | base | drift max rel | drift mean rel | drift mean ‖W′−W‖/‖sBA‖ | "
        "re-tuned − ported | ported gain − gain on θ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(ps, key=lambda p: (p["task"], p["update"], list(STEPS).index(p["step"]), p["seed"])):
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {p['task']} | {p['seed']} | {p['update']} | {STEPS[p['step']]} | {fmt(p['drift_max_rel'], '.4f')} | "
            f"{fmt(p['drift_mean_rel'], '.4f')} | {fmt(p['drift_mean_ratio'], '.3f')} | {fmt(p['gap'], '+.3f')} | "
            f"{fmt(p['kept'], '+.3f')} |"
        )
    lines.append("")
    for fig in ("drift_max_rel", "drift_mean_rel", "drift_mean_ratio"):
        for target in ("gap", "kept"):
            pts = [(p[fig], p[target]) for p in ps if p[fig] is not None and p[target] is not None]
            rho = spearman([a for a, _ in pts], [b for _, b in pts])
            lines.append(
                f"- Spearman ρ({fig}, {target}) over {len(pts)} ports: {'–' if rho is None else f'{rho:+.2f}'}"
            )
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(6.5 * len(tasks) + 4.5, 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
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
    ax = axes[0][-1]  # drift against the lost score, one point per port
    markers = {"theta_prime": "o", "theta_2prime": "s", "theta_3prime": "^"}
    for p in ports(rows):
        if p["drift_mean_rel"] is None or p["gap"] is None:
            continue
        color = "#2ca02c" if p["update"] == "lora-cpt" else "#d62728"
        ax.scatter(p["drift_mean_rel"], p["gap"], color=color, marker=markers[p["step"]], alpha=0.7)
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_xlabel("drift: mean over patched modules of ‖W′−W‖/‖W‖")
    ax.set_ylabel("score(θ′+Δθ′) − score(θ′+Δθ)")
    ax.set_title("drift vs. lost score (green lora-cpt, red full; ○ θ′ □ θ″ △ θ‴)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(results: Path) -> None:
    data = json.loads(results.read_text(encoding="utf-8"))
    rows = data["rows"]
    print(table(rows))
    print()
    print(drift_table(rows))
    chart(rows, results.with_name("results.png"))
    print(f"\nchart: {results.with_name('results.png')}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results.json")
