"""Eval folders: an lm-evaluation-harness task folder read, vetted and described (no torch, no lm-eval).

A folder holds task YAMLs whose data are local files inside it (``dataset_path: json`` plus
``dataset_kwargs.data_files`` relative to the folder). Code is refused unless trusted: a
``!function`` tag or a Python file would run on whoever validates the patch (a CI runner).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchctl._fs import sha256_file
from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.schemas._common import check_safe_relpath
from patchctl.schemas.manifest import EvalSpec, EvalTaskSpec, FileEntry

__all__ = ["EvalFolder", "build_eval_spec", "read_eval_folder", "refuse_untrusted_code"]

_YAML_SUFFIXES = (".yaml", ".yml")
_LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
#: lm-eval's default metric per output type, when a task lists none
_DEFAULT_METRIC = {
    "multiple_choice": "acc",
    "loglikelihood": "perplexity",
    "loglikelihood_rolling": "word_perplexity",
    "generate_until": "exact_match",
}
_LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter")


class _FunctionTag:
    """A ``!function module.name`` value (lm-eval runs it; we only note it)."""

    def __init__(self, target: str) -> None:
        self.target = target


def _load_yaml(path: Path) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    def function(loader: yaml.SafeLoader, node: yaml.Node) -> _FunctionTag:
        return _FunctionTag(str(loader.construct_scalar(node)))  # type: ignore[arg-type]

    Loader.add_constructor("!function", function)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v)


@dataclass(frozen=True)
class EvalTaskConfig:
    name: str
    yaml: str  # relative path
    metrics: tuple[str, ...]
    higher_is_better: dict[str, bool]


@dataclass(frozen=True)
class EvalFolder:
    root: Path
    files: tuple[FileEntry, ...]
    tasks: tuple[EvalTaskConfig, ...]
    #: reasons the folder would run code (``!function`` tags, Python files); empty: none
    code: tuple[str, ...]


def _data_files(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [f for v in value.values() for f in _data_files(v)]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in _data_files(v)]
    return []


def _check_task(rel: str, doc: Mapping[str, Any], present: set[str]) -> None:
    path = doc.get("dataset_path")
    if path is not None and path not in _LOCAL_BUILDERS:
        raise InvalidInputError(
            f"eval/{rel}: dataset_path {path!r} is not local; use dataset_path: json (or csv, parquet) with "
            "dataset_kwargs.data_files naming files inside the eval folder"
        )
    kwargs = doc.get("dataset_kwargs") or {}
    if path is not None:
        files = _data_files(kwargs.get("data_files") if isinstance(kwargs, Mapping) else None)
        if not files:
            raise InvalidInputError(f"eval/{rel}: dataset_kwargs.data_files must name the task's data files")
        for f in files:
            try:
                check_safe_relpath(f)
            except ValueError as exc:
                raise InvalidInputError(
                    f"eval/{rel}: data file {exc} (paths are relative to the eval folder)"
                ) from None
            if f not in present:
                raise InvalidInputError(f"eval/{rel}: data file {f!r} is not in the eval folder")
    include = doc.get("include")
    if isinstance(include, str) and (include.startswith("/") or ".." in include.split("/")):
        raise InvalidInputError(f"eval/{rel}: include {include!r} leaves the eval folder")


def read_eval_folder(root: Path) -> EvalFolder:
    """Hash every file of an eval folder and find its tasks; bad layouts raise InvalidInputError."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InvalidInputError(f"{root}: no such eval folder")
    entries: list[FileEntry] = []
    code: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            if p.is_symlink() or not p.is_file():
                raise InvalidInputError(f"{p}: eval folders hold plain files only (no links)")
            try:
                check_safe_relpath(rel)
            except ValueError as exc:
                raise InvalidInputError(f"{p}: {exc}") from None
            if fn.endswith((".py", ".pyc", ".so")):
                code.append(f"{rel} (Python)")
            entries.append(FileEntry(path=rel, sha256=sha256_file(p), size=p.stat().st_size))
    if not entries:
        raise InvalidInputError(f"{root}: the eval folder is empty")
    present = {e.path for e in entries}
    tasks: list[EvalTaskConfig] = []
    for e in entries:
        if not e.path.endswith(_YAML_SUFFIXES):
            continue
        doc = _load_yaml(root / e.path)
        for v in _walk(doc):
            if isinstance(v, _FunctionTag):
                code.append(f"{e.path} (!function {v.target})")
        if not isinstance(doc, Mapping) or not isinstance(doc.get("task"), str):
            continue  # groups and shared includes
        if "class" in doc:
            code.append(f"{e.path} (class:)")
        _check_task(e.path, doc, present)
        metrics: list[str] = []
        better: dict[str, bool] = {}
        for item in doc.get("metric_list") or ():
            if isinstance(item, Mapping) and isinstance(item.get("metric"), str):
                metrics.append(item["metric"])
                better[item["metric"]] = bool(item.get("higher_is_better", item["metric"] not in _LOWER_IS_BETTER))
        if not metrics:
            default = _DEFAULT_METRIC.get(str(doc.get("output_type", "generate_until")), "acc")
            metrics.append(default)
            better[default] = default not in _LOWER_IS_BETTER
        tasks.append(EvalTaskConfig(doc["task"], e.path, tuple(metrics), better))
    if not tasks:
        raise InvalidInputError(f"{root}: no task YAML (a file with a `task:` key) in the eval folder")
    names = [t.name for t in tasks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InvalidInputError(f"{root}: task names defined twice: {', '.join(sorted(dup))}")
    return EvalFolder(root, tuple(entries), tuple(tasks), tuple(code))


def refuse_untrusted_code(code: Sequence[str], *, where: str, trust: bool) -> None:
    if code and not trust:
        raise UnsupportedError(
            f"{where}: the eval set would run code ({'; '.join(code[:3])}); refused",
            hint="read it, then pass --trust-eval-code to run it",
        )


def build_eval_spec(
    folder: EvalFolder,
    *,
    tasks: Sequence[str] = (),
    metric: str | None = None,
    min_score: float | None = None,
    max_drop: float | None = 0.02,
    min_retained: float | None = None,
    baselines: Mapping[str, Any] | None = None,
) -> EvalSpec:
    """The manifest's ``eval`` section: chosen tasks (all by default), gated on ``metric`` (the
    task's first metric by default), thresholds, and baselines by task name (if scored)."""
    known = {t.name: t for t in folder.tasks}
    chosen = list(tasks) or list(known)
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise InvalidInputError(f"eval task(s) {', '.join(unknown)} not in the eval folder (tasks: {', '.join(known)})")
    specs = []
    for name in chosen:
        cfg = known[name]
        m = metric or cfg.metrics[0]
        if metric and cfg.metrics and metric not in cfg.metrics:
            raise InvalidInputError(f"task {name} has no metric {metric!r} (metrics: {', '.join(cfg.metrics)})")
        specs.append(
            EvalTaskSpec(
                task=name,
                metric=m,
                higher_is_better=cfg.higher_is_better.get(m, True),
                min_score=min_score,
                max_drop=max_drop,
                min_retained=min_retained,
                baseline=(baselines or {}).get(name),
            )
        )
    return EvalSpec(tasks=tuple(specs), files=folder.files, contains_code=bool(folder.code))
