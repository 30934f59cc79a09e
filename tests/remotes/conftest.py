"""Fixtures for the remote tests: a Hub-compatible server on 127.0.0.1, patches built from the
session's pico adapters, and one harness per remote kind for the shared contract suite."""

from __future__ import annotations

import os

# before huggingface_hub is imported anywhere: the test server speaks LFS, not Xet
os.environ["HF_HUB_DISABLE_XET"] = "1"

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from hubserver import HubServer
from remotes.helpers import PATCH_NAME, Harness

from patchctl.remotes import DirectoryRemote, HfHubRemote
from patchctl.schemas.peft_config import ADAPTER_CONFIG


def _disable_xet() -> None:
    mod = sys.modules.get("huggingface_hub.constants")
    if mod is not None:
        mod.HF_HUB_DISABLE_XET = True  # type: ignore[attr-defined]


_disable_xet()


@pytest.fixture(scope="session")
def adapter_b(llama_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same adapter with a different adapter_config.json (other content, same layout)."""
    out = tmp_path_factory.mktemp("adapter-b")
    for p in llama_adapter.iterdir():
        shutil.copy(p, out / p.name)
    cfg: dict[str, Any] = json.loads((out / ADAPTER_CONFIG).read_text())
    cfg["lora_dropout"] = 0.25
    (out / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2))
    return out


@pytest.fixture(params=["hub", "directory"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "hub":
        server: HubServer = request.getfixturevalue("hub")
        return Harness("hub", HfHubRemote(PATCH_NAME, endpoint=server.url), hub=server)
    root = tmp_path / "remote"
    return Harness("directory", DirectoryRemote(root / PATCH_NAME), root=root)
