"""The Catalog store on SQLite and PostgreSQL: versions, aliases, yank, bases, lineage, records."""

from __future__ import annotations

import dataclasses

import pytest
from catalogtools import make_manifest, sha, snapshot_db

from patchctl.errors import ConflictError, InvalidInputError, NotFoundError
from patchctl.registry.records import VersionInfo
from patchctl.registry.store import Catalog
from patchctl.schemas.base import BaseFacts, Family
from patchctl.schemas.refs import PatchRef, parse_patch_ref
from patchctl.settings import Settings

FAMILY = Family(model_type="llama", hidden_size=32)


def _add(cat: Catalog, version: str = "1.0.0", *, name: str = "acme/sst2", content: str = "a") -> VersionInfo:
    mf = make_manifest(name, version, content=content)
    return cat.add_version(mf, manifest_sha256=sha(mf.to_json())).version


def _facts(tag: str, revision: str | None = None) -> BaseFacts:
    return BaseFacts(
        source=f"/models/{tag}",
        revision=revision,
        weights_sha256=sha(tag),
        structure_sha256=sha("structure"),
        family=FAMILY,
        config={"model_type": "llama"},
        weight_files=(),
        tensors={},
    )


def _ref(text: str) -> PatchRef:
    ref = parse_patch_ref(text)
    assert isinstance(ref, PatchRef)
    return ref


def test_add_and_get_version_returns_plain_records(catalog: Catalog) -> None:
    mf = make_manifest()
    res = catalog.add_version(mf, manifest_sha256=sha(mf.to_json()))
    assert res.created
    got = catalog.get_version("acme/sst2", "1.0.0")
    assert dataclasses.is_dataclass(got) and got.manifest == mf
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.yanked = True  # type: ignore[misc]
    assert got.content_digest == mf.content_digest
    assert got.created_at.tzinfo is not None
    assert [p.name for p in catalog.list_patches()] == ["acme/sst2"]


def test_identical_readd_is_noop_and_different_content_conflicts(catalog: Catalog, settings: Settings) -> None:
    _add(catalog)
    before = snapshot_db(settings.database_url)
    mf = make_manifest(content="a")
    assert catalog.add_version(mf, manifest_sha256="0" * 64).created is False
    assert snapshot_db(settings.database_url) == before
    with pytest.raises(ConflictError, match="immutable"):
        _add(catalog, content="b")
    # 1.0 is the same PEP 440 version as 1.0.0
    with pytest.raises(ConflictError):
        _add(catalog, "1.0", content="b")
    assert catalog.add_version(make_manifest(version="1.0"), manifest_sha256="0" * 64).created is False
    assert snapshot_db(settings.database_url) == before


def test_versions_sort_by_pep440(catalog: Catalog) -> None:
    for v in ["1.10.0", "1.2.0", "1.2.0rc1", "1.2.0.post1", "0.9", "1.2.0.dev3", "2.0a1"]:
        _add(catalog, v, content=v)
    assert [v.version for v in catalog.list_versions("acme/sst2")] == [
        "0.9", "1.2.0.dev3", "1.2.0rc1", "1.2.0", "1.2.0.post1", "1.10.0", "2.0a1",
    ]  # fmt: skip
    summary = catalog.list_patches()[0]
    assert summary.latest == "1.10.0" and summary.versions == 7


def test_missing_patch_and_version(catalog: Catalog) -> None:
    with pytest.raises(NotFoundError, match="not in the catalog"):
        catalog.get_version("acme/none", "1.0")
    _add(catalog)
    with pytest.raises(NotFoundError, match=r"versions: 1\.0\.0"):
        catalog.get_version("acme/sst2", "2.0")
    with pytest.raises(InvalidInputError):
        catalog.get_version("acme/sst2", "not-a-version")


def test_yank_and_resolve(catalog: Catalog) -> None:
    for v in ["1.0.0", "1.1.0", "2.0.0rc1"]:
        _add(catalog, v, content=v)
    assert catalog.resolve(_ref("acme/sst2")).version.version == "1.1.0"
    catalog.yank("acme/sst2", "1.1.0", "broken tokenizer")
    assert catalog.resolve(_ref("acme/sst2")).version.version == "1.0.0"
    pinned = catalog.resolve(_ref("acme/sst2==1.1.0"))
    assert pinned.yanked and pinned.via == "version" and pinned.version.yank_reason == "broken tokenizer"
    assert catalog.resolve(_ref("acme/sst2@1.1.0")).yanked
    assert catalog.resolve(_ref("acme/sst2>=1.0")).version.version == "1.0.0"
    catalog.yank("acme/sst2", "1.0.0")
    # only a pre-release is left: chosen because nothing else matches
    assert catalog.resolve(_ref("acme/sst2")).version.version == "2.0.0rc1"
    catalog.yank("acme/sst2", "2.0.0rc1")
    with pytest.raises(NotFoundError, match="every version of acme/sst2 is yanked"):
        catalog.resolve(_ref("acme/sst2"))
    assert catalog.list_patches()[0].latest is None
    catalog.unyank("acme/sst2", "1.1.0")
    assert catalog.resolve(_ref("acme/sst2")).version.version == "1.1.0"
    assert catalog.get_version("acme/sst2", "1.1.0").yank_reason is None


def test_aliases(catalog: Catalog) -> None:
    _add(catalog, "1.0.0", content="1")
    _add(catalog, "1.1.0", content="2")
    catalog.set_alias("acme/sst2", "stable", "1.0.0")
    res = catalog.resolve(_ref("acme/sst2@stable"))
    assert res.via == "alias" and res.version.version == "1.0.0"
    catalog.set_alias("acme/sst2", "stable", "1.1")  # moves; 1.1 == 1.1.0
    assert catalog.resolve(_ref("acme/sst2@stable")).version.version == "1.1.0"
    assert [(a.alias, a.version) for a in catalog.list_aliases("acme/sst2")] == [("stable", "1.1.0")]
    assert catalog.list_patches()[0].aliases == {"stable": "1.1.0"}
    catalog.yank("acme/sst2", "1.0.0")
    with pytest.raises(ConflictError, match="yanked"):
        catalog.set_alias("acme/sst2", "old", "1.0.0")
    with pytest.raises(InvalidInputError, match="looks like a version"):
        catalog.set_alias("acme/sst2", "v2", "1.1.0")
    with pytest.raises(InvalidInputError):
        catalog.set_alias("acme/sst2", "9lives", "1.1.0")
    with pytest.raises(NotFoundError, match="no alias 'beta'"):
        catalog.resolve(_ref("acme/sst2@beta"))
    catalog.remove_alias("acme/sst2", "stable")
    with pytest.raises(NotFoundError):
        catalog.remove_alias("acme/sst2", "stable")
    assert catalog.list_aliases("acme/sst2") == []


def test_bases_are_idempotent_by_weights_fingerprint(catalog: Catalog) -> None:
    b, created = catalog.add_base(_facts("theta"))
    assert created and b.weights_sha256 == sha("theta")
    again, created = catalog.add_base(_facts("theta", revision="abc123"))
    assert not created and again.revision == "abc123"  # a revision learned later is kept
    assert len(catalog.list_bases()) == 1
    assert catalog.get_base(sha("theta")[:10]).source == "/models/theta"
    with pytest.raises(NotFoundError):
        catalog.get_base("ab" * 32)
    with pytest.raises(InvalidInputError):
        catalog.get_base("xyz")


def test_lineage_and_ancestors(catalog: Catalog) -> None:
    for tag in ("t0", "t1", "t2", "other"):
        catalog.add_base(_facts(tag))
    catalog.add_lineage(sha("t1"), sha("t0"), "update")
    catalog.add_lineage(sha("t2"), sha("t1"), "continued-pretraining")
    assert catalog.add_lineage(sha("t2"), sha("t1"), "update").relation == "continued-pretraining"  # idempotent
    anc = catalog.ancestors(sha("t2"))
    assert [(a.base.source, a.relation, a.depth) for a in anc] == [
        ("/models/t1", "continued-pretraining", 1),
        ("/models/t0", "update", 2),
    ]
    assert catalog.ancestors(sha("other")) == [] and catalog.ancestors("0" * 64) == []
    with pytest.raises(InvalidInputError, match="cycle"):
        catalog.add_lineage(sha("t0"), sha("t2"))
    with pytest.raises(InvalidInputError, match="own parent"):
        catalog.add_lineage(sha("t0"), sha("t0"))
    with pytest.raises(InvalidInputError, match="relation"):
        catalog.add_lineage(sha("other"), sha("t0"), "sideways")
    assert len(catalog.list_lineage()) == 2


def test_push_records_source_base(catalog: Catalog) -> None:
    mf = make_manifest(base="theta")
    catalog.add_version(mf, manifest_sha256=sha("m"), base=_facts("theta"), remote=("hf://acme/sst2", "c0ffee"))
    assert catalog.get_base(sha("theta")).source == "/models/theta"
    [remote] = catalog.list_remotes("acme/sst2", "1.0.0")
    assert (remote.url, remote.revision) == ("hf://acme/sst2", "c0ffee")
    catalog.record_remote("acme/sst2", "1.0.0", "hf://acme/sst2", "d00d")
    assert [r.revision for r in catalog.list_remotes("acme/sst2", "1.0.0")] == ["d00d"]


def test_reports_validations_installs(catalog: Catalog) -> None:
    _add(catalog)
    rep = catalog.record_compat_report(
        "acme/sst2", "1.0.0", base_weights_sha256=sha("t1"), status="warn", report={"checks": []}, tool_version="0.1.0"
    )
    catalog.record_validation(
        "acme/sst2",
        "1.0.0",
        base_weights_sha256=sha("t1"),
        scores={"acc": 0.91},
        verdict="pass",
        thresholds={"acc": 0.9},
    )
    inst = catalog.record_install(
        "acme/sst2", "1.0.0", base_weights_sha256=sha("t1"), out_path="/out", format="merged", report_id=rep.id
    )
    assert catalog.list_compat_reports("acme/sst2", "1.0")[0].report == {"checks": []}
    assert catalog.list_compat_reports("acme/sst2", base_weights_sha256=sha("zz")) == []
    assert catalog.list_validations("acme/sst2")[0].scores == {"acc": 0.91}
    assert catalog.list_installs("acme/sst2", "1.0.0") == [inst] and inst.report_id == rep.id
    with pytest.raises(InvalidInputError):
        catalog.record_compat_report(
            "acme/sst2", "1.0.0", base_weights_sha256=sha("t1"), status="ok", report={}, tool_version="x"
        )
    with pytest.raises(InvalidInputError):
        catalog.record_install("acme/sst2", "1.0.0", base_weights_sha256=sha("t1"), out_path="/o", format="gguf")
