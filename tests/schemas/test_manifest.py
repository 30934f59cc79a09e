import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchctl.errors import ManifestError
from patchctl.schemas.manifest import Manifest, content_digest


def _manifest_dict(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": "acme/sst2",
        "version": "1.0.0",
        "task": "sst2",
        "created_at": "2026-11-29T10:00:00+00:00",
        "patchctl_version": "0.1.0",
        "lora": {"r": 4, "lora_alpha": 8, "lora_pairs": 2, "total_parameters": 512},
        "source_base": {
            "repo": "acme/base",
            "revision": "abc",
            "weights_sha256": "a" * 64,
            "structure_sha256": "b" * 64,
            "family": {"model_type": "llama"},
        },
        "files": [{"path": "adapter_model.safetensors", "sha256": "c" * 64, "size": 10}],
    }
    d.update(over)
    return d


def test_manifest_round_trip_and_schema() -> None:
    m = Manifest.from_dict(_manifest_dict())
    assert Manifest.from_json(m.to_json()) == m
    schema = Manifest.json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"name", "version", "task", "lora", "source_base", "files"}


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"files": [{"path": "../evil", "sha256": "c" * 64, "size": 1}]}, "files.0.path"),
        ({"files": [{"path": "/etc/passwd", "sha256": "c" * 64, "size": 1}]}, "files.0.path"),
        ({"files": [{"path": "a\\b", "sha256": "c" * 64, "size": 1}]}, "files.0.path"),
        ({"files": [{"path": "a/./b", "sha256": "c" * 64, "size": 1}]}, "files.0.path"),
        ({"files": [{"path": "ok", "sha256": "XYZ", "size": 1}]}, "files.0.sha256"),
        ({"files": []}, "files"),
        ({"version": "one point oh"}, "version"),
        ({"name": "no-namespace"}, "name"),
        ({"unexpected": 1}, "unexpected"),
        ({"schema_version": 3}, "schema_version"),
    ],
)
def test_invalid_manifests_name_the_field(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ManifestError) as exc:
        Manifest.from_dict(_manifest_dict(**over))
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_version_is_normalized() -> None:
    assert Manifest.from_dict(_manifest_dict(version="v1.0")).version == "1.0"
    assert Manifest.from_dict(_manifest_dict(version="1.0.0RC1")).version == "1.0.0rc1"


def test_not_json() -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json(b"{not json")


_paths = st.from_regex(r"[a-z][a-z0-9_.-]{0,12}(/[a-z][a-z0-9_-]{0,8}){0,2}", fullmatch=True).filter(
    lambda p: ".." not in p
)


@given(
    files=st.dictionaries(_paths, st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**40)), min_size=1),
    r=st.integers(1, 512),
    alpha=st.floats(0.5, 1024, allow_nan=False),
    minute=st.integers(0, 59),
)
def test_manifest_round_trip_property(files: dict[str, tuple[bytes, int]], r: int, alpha: float, minute: int) -> None:
    entries = [{"path": p, "sha256": h.hex(), "size": n} for p, (h, n) in files.items()]
    m = Manifest.from_dict(
        _manifest_dict(
            files=entries,
            lora={"r": r, "lora_alpha": alpha, "lora_pairs": 1, "total_parameters": 1},
            created_at=datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc).isoformat(),
        )
    )
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert json.loads(again.to_json()) == json.loads(m.to_json())
    # the content digest depends on files only, not on their order
    assert again.content_digest == content_digest(reversed([(e["path"], e["sha256"]) for e in entries]))
