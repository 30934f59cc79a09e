"""Resolver rules, driven by the JSON cases in resolver_cases/, run through a real catalog."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from catalogtools import make_manifest, sha
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from patchctl import errors
from patchctl.registry.resolver import version_sort_key
from patchctl.registry.store import Catalog
from patchctl.schemas.refs import PatchRef, parse_patch_ref

CASES = sorted((Path(__file__).parent / "resolver_cases").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_resolver_case(case_file: Path, catalog: Catalog) -> None:
    case = _load(case_file)
    for v in case["versions"]:
        mf = make_manifest("acme/p", v["version"], content=v["version"])
        catalog.add_version(mf, manifest_sha256=sha(mf.to_json()))
    for alias, target in case.get("aliases", {}).items():
        catalog.set_alias("acme/p", alias, target)
    for v in case["versions"]:
        if v.get("yanked"):
            catalog.yank("acme/p", v["version"])
    for v in case.get("yank_after", []):
        catalog.yank("acme/p", v)
    ref = parse_patch_ref(case["request"])
    assert isinstance(ref, PatchRef)
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(getattr(errors, expect["error"]), match=expect["match"]):
            catalog.resolve(ref)
        return
    res = catalog.resolve(ref)
    assert (res.version.version, res.yanked, res.via) == (expect["version"], expect["yanked"], expect["via"])


def test_cases_exist() -> None:
    assert len(CASES) >= 10


_versions = st.builds(
    lambda epoch, rel, pre, post, dev: Version(
        (f"{epoch}!" if epoch else "")
        + ".".join(map(str, rel))
        + (f"{pre[0]}{pre[1]}" if pre else "")
        + (f".post{post}" if post is not None else "")
        + (f".dev{dev}" if dev is not None else "")
    ),
    st.integers(0, 2),
    st.lists(st.integers(0, 20), min_size=1, max_size=4),
    st.one_of(st.none(), st.tuples(st.sampled_from(["a", "b", "rc"]), st.integers(0, 12))),
    st.one_of(st.none(), st.integers(0, 12)),
    st.one_of(st.none(), st.integers(0, 12)),
)


@given(st.lists(_versions, min_size=2, max_size=12))
def test_sort_key_orders_like_packaging(versions: list[Version]) -> None:
    by_key = sorted(versions, key=version_sort_key)
    assert by_key == sorted(versions)
    for a, b in itertools.pairwise(versions):
        assert (version_sort_key(a) == version_sort_key(b)) == (a == b)


def test_sort_key_refuses_unindexable_versions() -> None:
    with pytest.raises(errors.InvalidInputError):
        version_sort_key("1.2.3.4.5.6.7.8.9")
    assert re.fullmatch(r"[0-9!.|_a-z+]+", version_sort_key("1.0rc1"))
