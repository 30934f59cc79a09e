"""Lineage from the Hub (through the test Hub server): model card base_model and commit order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from catalogtools import run_cli
from hubserver import HubServer

from patchctl import api
from patchctl.lineage import add_hub_base, hub_lineage, lineage
from patchctl.schemas import HubRef
from patchctl.settings import Settings


def _with_card(src: Path, dest: Path, card: str) -> Path:
    shutil.copytree(src, dest)
    (dest / "README.md").write_text(f"---\n{card}---\n# a base\n")
    return dest


def test_card_and_commit_order(
    hub: HubServer, pico_llama: Path, pico_llama_sharded: Path, pico_gpt2: Path, tmp_path: Path
) -> None:
    settings = Settings.resolve(home=str(tmp_path / "home"))
    upstream = hub.seed_repo("meta/pico", pico_llama_sharded)
    # a fine-tune of meta/pico whose card says so; then a second commit on the same branch
    first = hub.seed_repo("acme/pico-ft", _with_card(pico_llama, tmp_path / "ft1",
                          "base_model: meta/pico\nbase_model_relation: finetune\n"))  # fmt: skip
    second = hub.seed_repo("acme/pico-ft", _with_card(pico_gpt2, tmp_path / "ft2", "base_model: meta/pico\n"))
    hints = hub_lineage(HubRef("acme/pico-ft"))
    assert hints.commit == second and hints.earlier_commits[0] == first
    assert hints.base_models == ("meta/pico",) and hints.relation is None

    root = add_hub_base(settings, "hf://meta/pico")
    assert root.base.revision == upstream and root.edges == ()
    ft = add_hub_base(settings, f"hf://acme/pico-ft@{first}")
    assert [(e.parent, e.relation) for e in ft.edges] == [(root.base.weights_sha256, "finetune")]
    # the later commit (other weights, same file names) descends from the earlier one (commit order) and from the card's base_model
    r = run_cli(["--home", str(settings.home), "base", "add", "hf://acme/pico-ft", "--json"])
    assert r.code == 0, r.stderr
    edges = {(e["parent"], e["relation"]) for e in json.loads(r.stdout)["edges"]}
    assert edges == {(ft.base.weights_sha256, "update"), (root.base.weights_sha256, "other")}
    g = lineage(settings, root.base.weights_sha256)
    assert {b.revision for b in g.bases} == {upstream, first, second}
    listing = api.base_list(settings)
    assert len(listing.edges) == 3
