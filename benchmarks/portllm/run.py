"""PortLLM (arXiv 2410.10870) at small scale: is θ′ + Δθ (ported by patchctl, training-free) close
to θ′ + Δθ′ (fine-tuned again on θ′), and what does each cost?

Usage: nice -n 10 python benchmarks/portllm/run.py [--tasks movie,tweets] [--seeds 0,1,2] [--n-eval 100]
           [--ft-steps 24] [--cpt-steps 12] [--work DIR] [--out benchmarks/portllm/results.json]
       python benchmarks/portllm/run.py --report   # table + chart from results.json only

θ = SmolLM2-135M-Instruct (examples/realmodel/assets.py). θ′ = θ after continued pretraining on
NYT editorial snippets, (a) "lora-cpt": a rank-16 LoRA on every linear layer merged into θ, or
(b) "full-cpt": every weight; chain: θ → θ′ (full) → θ″ → θ‴ on further, disjoint news slices.
Δθ = a LoRA fine-tuned on θ for the task (per seed); Δθ′ = the same recipe fine-tuned on θ′.
For every θ′ the patch is ported with the public CLI (`patchctl base add`, `check --drift --json`,
`install`), and the costs of porting and of fine-tuning again are measured in child processes
(wall seconds and peak RSS). Every score is lm-eval (`lm_eval.simple_evaluate`) on a local task
folder of held-out, human-rated sentences. Rows are appended to results.json as they come (a run
can be stopped and resumed: rows already there are not recomputed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.realmodel import assets, pipeline  # noqa: E402

HERE = Path(__file__).resolve().parent
CORPUS = {"movie": "movie", "tweets": "tweets"}
NEWS_SLICES = {"theta_prime": 0, "theta_2prime": 1, "theta_3prime": 2}  # disjoint slices of the news corpus


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measured_child(
    cmd: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, float, str, float]:
    """Run ``cmd``; its wall seconds, its peak RSS in MiB, its stdout and its CPU seconds (user +
    system: unlike wall time, not inflated by other jobs on the machine). The peak is the child's
    VmHWM polled from /proc (ru_maxrss would carry this big parent's RSS over fork + exec)."""
    import resource
    import threading

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = [0.0]

    def poll() -> None:
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) / 1024)
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # children run one at a time: this one's
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return seconds, peak[0], out.decode(), cpu


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.work: Path = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "PATCHCTL_HOME": str(self.work / "home"),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "TQDM_DISABLE": "1",
            "PYTHONWARNINGS": "ignore",
        }
        self.env.pop("PATCHCTL_DATABASE_URL", None)
        self.env.pop("PATCHCTL_REMOTE", None)
        self.out: Path = args.out
        self.rows: list[dict[str, Any]] = json.loads(self.out.read_text())["rows"] if self.out.is_file() else []
        self.corpora = assets.vader_corpora()
        self.theta = assets.smollm2_base()

    # -- bookkeeping
    def done(self, **key: Any) -> dict[str, Any] | None:
        for r in self.rows:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.a).items() if k != "report"}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"config": config, "rows": self.rows}, indent=1), encoding="utf-8")
        tmp.replace(self.out)
        log(f"row {row['task']} seed={row['seed']} {row['update']}/{row['step']} {row['model']}: {row['score']:.3f}")

    def patchctl(self, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, float, str, float]:
        return measured_child([sys.executable, "-m", "patchctl", *args], env=self.env, ok=ok)

    # -- artefacts
    def task_dir(self, task: str) -> tuple[Path, list[dict[str, Any]]]:
        ev, tr = assets.sentiment_split(
            self.corpora[CORPUS[task]], n_eval=self.a.n_eval, n_train=256, min_abs=1.0, max_chars=100
        )
        d = self.work / "eval" / f"{task}_sentiment"
        if not (d / f"{task}_sentiment.yaml").is_file():
            assets.write_mc_task(d, f"{task}_sentiment", ev, description=f"{task} sentiment (Hutto & Gilbert 2014)")
        return d, tr

    def base(self, update: str, step: str) -> Path:
        """θ′ (update kind a or b), θ″ and θ‴ (chain, full-weight), built once (not per seed)."""
        if step == "theta":
            return self.theta
        d = self.work / "bases" / f"{update}-{step}"
        if (d / "TRAINING.json").is_file():
            return d
        parent = self.theta if step == "theta_prime" else self.base(update, prev_step(step))
        n = 96
        texts = assets.pretraining_texts(self.corpora["news"], start=NEWS_SLICES[step] * n, count=n)
        kind = "lora" if update == "lora-cpt" else "full"
        lr = 2e-4 if kind == "lora" else 5e-5
        recipe = {"kind": kind, "steps": self.a.cpt_steps, "batch": 4, "lr": lr, "seq_len": 48, "seed": 0, "texts": n}
        if step == "theta_prime" and self.reuse(self.a.reuse_demo / "models" / f"{self.theta.name}-news", d, recipe):
            self.patchctl("base", "add", str(d), "--parent", str(parent), "--relation", "update")
            return d
        log(f"building {d.name}: {kind} continued pretraining of {parent.name} ({self.a.cpt_steps} steps)")
        pipeline.continued_pretraining(
            parent, d, texts, kind=kind, steps=self.a.cpt_steps, batch=4, lr=lr, seq_len=48, seed=0
        )
        self.patchctl("base", "add", str(d), "--parent", str(parent), "--relation", "update")
        return d

    def finetune(
        self, base: Path, train: list[dict[str, Any]], seed: int, out: Path
    ) -> tuple[float, float | None, float | None]:
        """Δθ on ``base`` in a child process: (seconds, peak RSS MiB, CPU seconds); reused when already there."""
        cost = out / "COST.json"
        recipe = {"steps": self.a.ft_steps, "batch": 4, "seed": seed, "train_docs": len(train), "rank": 8}
        demo_adapter = self.a.reuse_demo / "adapters" / "movie-sentiment-lora"
        if not cost.is_file():
            shutil.rmtree(out, ignore_errors=True)  # left by an interrupted run
        if (
            not cost.is_file()
            and base == self.theta
            and out.name.startswith("movie-")
            and self.reuse(demo_adapter, out, recipe)
        ):
            meta = json.loads((out / "TRAINING.json").read_text())
            cost.write_text(
                json.dumps({"seconds": meta["seconds"], "peak_rss_mib": None, "cpu_s": None, "reused": True})
            )
        if cost.is_file():
            c = json.loads(cost.read_text())
            return c["seconds"], c["peak_rss_mib"], c.get("cpu_s")
        data = self.work / "train.json"
        data.write_text(json.dumps(train))
        code = (
            "import json,sys; from pathlib import Path; from examples.realmodel import pipeline; "
            "pipeline.quiet(); pipeline.finetune_lora(Path(sys.argv[1]), Path(sys.argv[2]), "
            f"json.load(open(sys.argv[3])), steps={self.a.ft_steps}, batch=4, seed={seed})"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        seconds, peak, _, cpu = measured_child(
            [sys.executable, "-c", code, str(base), str(out), str(data)], env=self.env
        )
        cost.write_text(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "cpu_s": cpu}))
        return seconds, peak, cpu

    def base_score(self, task: str, update: str, step: str, base: Path | None = None) -> dict[str, Any]:
        """A base model's score (θ, θ′...): the same model on the same eval set for every seed, so it
        is scored once and the other seeds' rows say which seed's score they repeat."""
        model = "theta" if update == "none" else "theta_prime"
        for r in self.rows:
            if r["task"] == task and r["update"] == update and r["step"] == step and r["model"] == model:
                return {"score": r["score"], "score_of_seed": r.get("score_of_seed", r["seed"])}
        task_dir, _ = self.task_dir(task)
        return {"score": self.score(base or self.theta, task_dir)}

    def score(self, model_dir: Path, task_dir: Path, adapter: Path | None = None) -> float:
        return pipeline.score_dir(model_dir, task_dir, adapter=adapter)

    def reuse(self, candidate: Path | None, dest: Path, recipe: dict[str, Any]) -> bool:
        """Copy an artefact `make demo` already made with exactly this recipe (same code, inputs and
        seed: the same weights) instead of training it again; the rows say where it came from."""
        if candidate is None or not (candidate / "TRAINING.json").is_file() or str(candidate).startswith("."):
            return False
        meta = json.loads((candidate / "TRAINING.json").read_text())
        if any(meta.get(k) != v for k, v in recipe.items()) or meta.get("base") is None:
            return False
        if Path(meta["base"]).name != self.theta.name:
            return False
        log(f"reusing {candidate} (same recipe) as {dest.name}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(candidate, dest)
        return True

    # -- the experiment
    def run(self) -> None:
        pipeline.quiet()
        self.base("lora-cpt", "theta_prime")  # first: the one base `make demo` does not make
        for task in self.a.tasks:
            task_dir, train = self.task_dir(task)
            for seed in self.a.seeds:
                self.run_seed(task, task_dir, train, seed)

    def run_seed(self, task: str, task_dir: Path, train: list[dict[str, Any]], seed: int) -> None:
        key = {"task": task, "seed": seed}
        if not self.done(**key, update="none", model="theta"):
            self.add(
                {**key, "update": "none", "step": "theta", "model": "theta", **self.base_score(task, "none", "theta")}
            )
        delta = self.work / "adapters" / f"{task}-s{seed}-theta"
        ft_s, ft_mb, ft_cpu = self.finetune(self.theta, train, seed, delta)
        name = f"bench/{task}-s{seed}"
        if not self.done(**key, update="none", model="theta+delta"):
            self.patchctl(
                "push", str(delta), "--name", name, "--version", "1.0.0", "--task", task, "--base", str(self.theta)
            )
            row = {**key, "update": "none", "step": "theta", "model": "theta+delta"}
            self.add(
                {
                    **row,
                    "score": self.score(self.theta, task_dir, delta),
                    "finetune_s": ft_s,
                    "finetune_peak_mib": ft_mb,
                    "finetune_cpu_s": ft_cpu,
                }
            )
        plan = [("lora-cpt", "theta_prime"), ("full-cpt", "theta_prime")]
        if seed in self.a.chain_seeds:
            plan += [("full-cpt", "theta_2prime"), ("full-cpt", "theta_3prime")]
        for update, step in plan:
            k = {**key, "update": update, "step": step}
            if self.done(**k, model="theta_prime+delta_prime"):
                continue
            base = self.base(update, step)
            if not self.done(**k, model="theta_prime"):
                self.add({**k, "model": "theta_prime", **self.base_score(task, update, step, base)})
            # port: check --drift, then install (both through the CLI), timed in a child process
            _, _, check_out, _ = self.patchctl(
                "check", name, "--onto", str(base), "--drift", "--source-base", str(self.theta), "--json", ok=(0, 20)
            )
            drift = drift_figures(json.loads(check_out))
            installed = self.work / "installed" / f"{task}-s{seed}-{update}-{step}"
            shutil.rmtree(installed, ignore_errors=True)
            port_s, port_mb, _, port_cpu = self.patchctl("install", name, "--onto", str(base), "--out", str(installed))
            if not self.done(**k, model="theta_prime+delta"):
                self.add(
                    {
                        **k,
                        "model": "theta_prime+delta",
                        "score": self.score(installed, task_dir),
                        "port_s": port_s,
                        "port_peak_mib": port_mb,
                        "port_cpu_s": port_cpu,
                        **drift,
                    }
                )
            shutil.rmtree(installed, ignore_errors=True)
            # the upper bound: fine-tune again on θ′
            delta2 = self.work / "adapters" / f"{task}-s{seed}-{update}-{step}"
            ft2_s, ft2_mb, ft2_cpu = self.finetune(base, train, seed, delta2)
            self.add(
                {
                    **k,
                    "model": "theta_prime+delta_prime",
                    "score": self.score(base, task_dir, delta2),
                    "finetune_s": ft2_s,
                    "finetune_peak_mib": ft2_mb,
                    "finetune_cpu_s": ft2_cpu,
                }
            )


def prev_step(step: str) -> str:
    return {"theta_2prime": "theta_prime", "theta_3prime": "theta_2prime"}[step]


def drift_figures(check: dict[str, Any]) -> dict[str, Any]:
    """The drift row of `check --drift --json`: its status, detail and figures, flattened."""
    for r in check.get("results", []):
        if r.get("name") == "drift":
            fig: dict[str, Any] = {"drift_status": r.get("status"), "drift_detail": r.get("detail")}
            data = r.get("data") or {}
            modules = data.get("modules") or []
            fig["drift_max_rel"] = data.get("max_rel")  # max over patched modules of ‖W′−W‖/‖W‖
            fig["drift_max_ratio"] = data.get("max_ratio")  # max of ‖W′−W‖/‖s·B·A‖
            rel = [m["rel"] for m in modules if isinstance(m.get("rel"), (int, float))]
            ratio = [m["ratio"] for m in modules if isinstance(m.get("ratio"), (int, float))]
            fig["drift_mean_rel"] = sum(rel) / len(rel) if rel else None
            fig["drift_mean_ratio"] = sum(ratio) / len(ratio) if ratio else None
            return fig
    return {"drift_status": None}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="movie,tweets", type=lambda s: s.split(","))
    p.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--chain-seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",") if x])
    p.add_argument("--n-eval", type=int, default=100)
    p.add_argument("--ft-steps", type=int, default=24)
    p.add_argument("--cpt-steps", type=int, default=12)
    p.add_argument("--work", type=Path, default=HERE / "_work")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    p.add_argument(
        "--reuse-demo",
        type=Path,
        default=Path("/nonexistent"),
        help="a `make demo` output folder (demo-out/real) whose θ′ and Δθ were made with this recipe: copied, not retrained",
    )
    p.add_argument("--report", action="store_true", help="only print the table and draw the chart")
    a = p.parse_args(argv)
    if not a.report:
        Bench(a).run()
    from benchmarks.portllm import report

    report.main(a.out)


if __name__ == "__main__":
    main(sys.argv[1:])
