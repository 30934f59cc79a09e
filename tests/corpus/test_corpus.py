"""The bad-input corpus: every hostile or damaged input patchctl has met, run against push,
check, install and pull through the real CLI.

Each case is a folder ``cases/<name>/`` with ``case.json``::

    {"description": "...",
     "adapter": "lora", "base": "llama",          # starting points (conftest.corpus_models)
     "ops": [...],                                # mutations of the copies (below)
     "expect": {"push": [4, "message fragment"], "check": [...], "install": [...], "pull": [...]}}

and optionally ``adapter/`` and ``base/`` folders whose files replace the starting copies' files
verbatim (a config with ``Infinity`` in it, say). A command missing from ``expect`` is not run.
Ops (binary damage cannot be written as a file): ``truncate`` (file, keep: fraction),
``overlap`` (the second tensor shares the first one's bytes), ``offsets_past_eof``,
``nonfinite`` (a NaN in the first floating tensor), ``symlink`` (file → an absolute path
outside), ``rename`` (file → to), ``config`` (file, set: {key: value}).

After every failing command: one ``error:`` line and no traceback, nothing at ``--out``, and
the catalog and store unchanged (nothing half-recorded); ``pull`` reads the case's adapter
from a directory remote whose ``patch.json`` lists the damaged files' real sha256 (so the
reader, not the digest check, must refuse).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from catalogtools import run_cli, snapshot_db

from patchctl.bases import read_safetensors_header

CASES_DIR = Path(__file__).parent / "cases"
CASES = sorted(p for p in CASES_DIR.iterdir() if (p / "case.json").is_file())
COMMANDS = ("push", "check", "install", "pull")


def _load(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case / "case.json").read_text())
    return data


def _raw_header(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_header(path: Path, header: dict[str, Any], data: bytes) -> None:
    blob = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def _tensors(header: dict[str, Any]) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def _apply(op: dict[str, Any], root: Path) -> None:
    kind = op["op"]
    path = root / op.get("file", "adapter_model.safetensors")
    if kind == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * op["keep"])])
    elif kind == "overlap":
        header, data = _raw_header(path)
        names = _tensors(header)
        first, second = next(
            (a, b)
            for i, a in enumerate(names)
            for b in names[i + 1 :]
            if (header[a]["shape"], header[a]["dtype"]) == (header[b]["shape"], header[b]["dtype"])
        )
        header[second]["data_offsets"] = header[first]["data_offsets"]
        _write_header(path, header, data)
    elif kind == "offsets_past_eof":
        header, data = _raw_header(path)
        last = _tensors(header)[-1]
        begin, end = header[last]["data_offsets"]
        header[last]["data_offsets"] = [begin + 10**12, end + 10**12]
        _write_header(path, header, data)
    elif kind == "nonfinite":
        header, data = _raw_header(path)
        first = next(k for k in _tensors(header) if header[k]["dtype"] == "F32")
        begin = header[first]["data_offsets"][0]
        data = data[:begin] + struct.pack("<f", float("nan")) + data[begin + 4 :]
        _write_header(path, header, data)
    elif kind == "symlink":
        path.unlink()
        path.symlink_to(op["to"])
    elif kind == "rename":
        path.rename(root / op["to"])
    elif kind == "config":
        cfg = json.loads(path.read_text())
        cfg.update(op["set"])
        path.write_text(json.dumps(cfg))
    else:  # pragma: no cover - a typo in a case
        raise AssertionError(f"unknown op {kind!r}")


def _materialise(case: Path, spec: dict[str, Any], models: dict[str, Path], tmp: Path) -> tuple[Path, Path]:
    adapter = Path(shutil.copytree(models[spec.get("adapter", "lora")], tmp / "adapter"))
    base = Path(shutil.copytree(models[spec.get("base", "llama")], tmp / "base"))
    for target, root in (("adapter", adapter), ("base", base)):
        override = case / target
        if override.is_dir():
            for f in override.iterdir():
                shutil.copyfile(f, root / f.name)
    for op in spec.get("ops", []):
        _apply(op, adapter if op.get("target", "adapter") == "adapter" else base)
    return adapter, base


def _directory_remote(adapter: Path, good_adapter: Path, base: Path, tmp: Path, home: Path) -> str:
    """A directory remote holding the damaged adapter under a patch.json that lists its real
    sha256s (a well-formed manifest of the good adapter, files swapped)."""
    from patchctl.api import prepare_push
    from patchctl.schemas.manifest import FileEntry

    good = prepare_push(good_adapter, name="corpus/case", version="1.0.0", task="corpus", base_dir=base).manifest
    files = []
    for f in good.files:
        p = adapter / f.path
        if p.is_file():
            from patchctl._fs import sha256_file

            files.append(FileEntry(path=f.path, sha256=sha256_file(p), size=p.stat().st_size))
    manifest = good.model_copy(update={"files": tuple(files)})
    root = tmp / "remote"
    version_dir = root / "corpus" / "case" / "versions" / "1.0.0"
    version_dir.mkdir(parents=True)
    for f in files:
        shutil.copyfile(adapter / f.path, version_dir / f.path)
    (version_dir / "patch.json").write_text(manifest.to_json())
    return f"file://{root}"


def _assert_clean_failure(stderr: str, code: int) -> None:
    assert "Traceback" not in stderr, stderr
    if code not in (20, 21):  # a refusal: one line (and maybe a hint), nothing else
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, stderr


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Path, command: str, corpus_models: dict[str, Path], tmp_path: Path) -> None:
    spec = _load(case)
    if command not in spec["expect"]:
        pytest.skip(f"{case.name}: {command} is not part of this case")
    code, fragment = spec["expect"][command]
    adapter, base = _materialise(case, spec, corpus_models, tmp_path)
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    common = ["--home", str(home), "--db", db]
    assert run_cli([*common, "db", "upgrade"]).code == 0
    out = tmp_path / "out"
    if command == "push":
        args = ["push", adapter, "--name", "corpus/case", "--version", "1.0.0", "--task", "corpus", "--base", base]
    elif command == "check":
        args = ["check", adapter, "--onto", base]
    elif command == "install":
        args = ["install", adapter, "--onto", base, "--out", out]
    else:
        # the manifest of a plain LoRA adapter, its files swapped for the case's (digests included)
        url = _directory_remote(adapter, corpus_models["lora"], corpus_models["llama"], tmp_path, home)
        args = ["pull", f"{url}/corpus/case@1.0.0"]
    before = snapshot_db(db)
    r = run_cli([*common, *map(str, args)])
    assert r.code == code, f"{case.name} {command}: exit {r.code}, expected {code}\n{r.stderr}"
    assert fragment in r.stderr + r.stdout, f"{case.name} {command}: {fragment!r} not in\n{r.stderr}"
    if code != 0:
        _assert_clean_failure(r.stderr, code)
        assert not out.exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())
        if code not in (20, 21):  # a report is logged; nothing else is recorded
            assert snapshot_db(db) == before
        store = home / "store" / "sha256"
        assert not store.exists() or not any(store.rglob("*")) or command not in ("push", "pull")


def test_every_case_is_well_formed() -> None:
    """The corpus itself: a description, known commands, an exit code and a fragment for each."""
    assert len(CASES) >= 25
    for case in CASES:
        spec = _load(case)
        assert spec.get("description"), case.name
        assert spec["expect"] and set(spec["expect"]) <= set(COMMANDS), case.name
        for code, fragment in spec["expect"].values():
            assert isinstance(code, int) and isinstance(fragment, str) and fragment, case.name


def test_corpus_safetensors_damage_is_refused_by_the_header_reader_too(
    corpus_models: dict[str, Path], tmp_path: Path
) -> None:
    """Every damaged-weights case fails in :func:`read_safetensors_header` itself, so no reader
    of adapters or bases can skip the validation."""
    from patchctl.errors import InvalidInputError

    damaged = 0
    for case in CASES:
        spec = _load(case)
        if not any(op["op"] in ("truncate", "overlap", "offsets_past_eof") for op in spec.get("ops", [])):
            continue
        adapter, base = _materialise(case, spec, corpus_models, tmp_path / case.name)
        for root in (adapter, base):
            for f in root.glob("*.safetensors"):
                try:
                    read_safetensors_header(f)
                except InvalidInputError:
                    damaged += 1
    assert damaged >= 4
