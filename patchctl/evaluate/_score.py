"""Scoring with lm-evaluation-harness, offline, on a model already in memory.

The base is loaded once (:func:`load_base`, counted in :data:`LOADS` for tests); an
:class:`Scorer` wraps it in lm-eval's ``HFLM(pretrained=model, tokenizer=tok)`` and runs the
tasks of an eval folder (a ``TaskManager`` with ``include_path``, data files resolved from
the folder, ``HF_DATASETS_OFFLINE=1``). lm-eval's own logging and prints go to stderr; a rich
progress bar over requests is drawn on stderr when it is a terminal. Fixed seeds, no sampling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.schemas.manifest import EvalTaskSpec

__all__ = ["LOADS", "LoadedBase", "Scorer", "lm_eval_version", "load_base", "resolve_device"]

#: how many times a base was loaded in this process (tests assert ``ci`` loads once)
LOADS: list[str] = []


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UnsupportedError("validation needs lm-evaluation-harness", hint="pip install 'patchctl[eval]'") from None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InvalidInputError(f"--device {device!r}: expected auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda: no CUDA device is available")
    return device


@dataclass
class LoadedBase:
    path: Path
    model: Any
    tokenizer: Any
    device: str


def load_base(base_dir: Path, *, device: str = "auto") -> LoadedBase:
    """Load a base (its own dtype, as ``lm_eval --model hf`` does with ``dtype=auto``) once."""
    _require_lm_eval()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dev = resolve_device(device)
    quiet: Any = hf_logging
    quiet.disable_progress_bar()
    with _stdout_to_stderr():
        model: Any = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model.to(dev).eval()
    LOADS.append(str(base_dir))
    return LoadedBase(Path(base_dir), model, tokenizer, dev)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _no_git_probe() -> Iterator[None]:
    """lm-eval records the git commit of the working directory by running `git describe`, which
    prints "fatal: not a git repository" on stderr outside one; the eval folder is no repository,
    so skip the probe (the hash is not used: patchctl records its own and lm-eval's versions)."""
    import lm_eval.evaluator as evaluator

    probe = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = probe


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    keys = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update({"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _RequestProgress:
    """A rich progress bar over lm-eval's requests (with ETA), on stderr when it is a terminal."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console

            console = Console(stderr=True)
            if console.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self._bar = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=console,
                    transient=True,
                )

    def start(self, total: int) -> None:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._task = None


class Scorer:
    """lm-eval over one loaded base; the same instance scores the base, then each patch on it."""

    def __init__(self, base: LoadedBase, *, batch_size: int = 1) -> None:
        from lm_eval.models.huggingface import HFLM

        if batch_size < 1:
            raise InvalidInputError("--batch-size must be at least 1")
        self.base = base
        # lm-eval warns that an in-memory model is passed (that is the point): keep it to errors
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        with _stdout_to_stderr():
            self.lm = HFLM(pretrained=base.model, tokenizer=base.tokenizer, batch_size=batch_size, device=base.device)
        self._progress: _RequestProgress | None = None
        self._wrap()

    def _wrap(self) -> None:
        lm = self.lm
        for method in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
            original = getattr(lm, method)

            def run(requests: Sequence[Any], disable_tqdm: bool = False, _original: Any = original) -> Any:
                progress = self._progress
                if progress is not None:
                    progress.start(len(requests))
                try:
                    return _original(requests, disable_tqdm=True)
                finally:
                    if progress is not None:
                        progress.stop()

            setattr(lm, method, run)
        model_call = lm._model_call

        def call(inps: Any, *args: Any, **kwargs: Any) -> Any:
            out = model_call(inps, *args, **kwargs)
            if self._progress is not None:
                self._progress.advance(int(inps.shape[0]))
            return out

        lm._model_call = call

    def score(
        self,
        folder: Path,
        tasks: Sequence[EvalTaskSpec],
        *,
        limit: int | None = None,
        label: str = "scoring",
        progress: bool = True,
    ) -> dict[str, float]:
        """Run ``tasks`` of the eval folder; the gated metric's value by task name."""
        import lm_eval
        from lm_eval.tasks import TaskManager

        folder = Path(folder).resolve()
        self._progress = _RequestProgress(label, progress)
        quiet = logging.getLogger("lm_eval")
        try:
            with _offline(), _chdir(folder), _stdout_to_stderr(), _no_git_probe():
                tm = TaskManager(include_path=str(folder), include_defaults=False)
                quiet.setLevel(logging.ERROR)
                results = lm_eval.simple_evaluate(
                    model=self.lm,
                    tasks=[t.task for t in tasks],
                    task_manager=tm,
                    limit=limit,
                    log_samples=False,
                    bootstrap_iters=0,
                    verbosity="ERROR",
                )
        finally:
            self._progress = None
        out: dict[str, float] = {}
        for t in tasks:
            row = (results or {}).get("results", {}).get(t.task)
            if row is None or t.result_key not in row:
                have = ", ".join(k for k in (row or {}) if "," in k and "stderr" not in k) or "none"
                raise InvalidInputError(f"eval task {t.task}: lm-eval reported no {t.result_key} (metrics: {have})")
            out[t.task] = float(row[t.result_key])
        return out
