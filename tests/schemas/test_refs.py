from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from patchctl.errors import RefError
from patchctl.schemas.refs import HubRef, PatchRef, PathRef, RemoteRef, parse_base_ref, parse_patch_ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/name", PatchRef("org/name")),
        ("org/name==1.2.*", PatchRef("org/name", spec=SpecifierSet("==1.2.*"))),
        ("org/name>=1.0,<2", PatchRef("org/name", spec=SpecifierSet(">=1.0,<2"))),
        ("org/name@1.2.0", PatchRef("org/name", version="1.2.0")),
        ("org/name@v1.2", PatchRef("org/name", version="1.2")),
        ("org/name@stable", PatchRef("org/name", alias="stable")),
        ("hf://org/repo", HubRef("org/repo")),
        ("hf://org/repo@main", HubRef("org/repo", revision="main")),
        ("hf://org/repo@v1.0.0", HubRef("org/repo", revision="v1.0.0")),
        ("hf://org/repo==1.*", HubRef("org/repo", spec=SpecifierSet("==1.*"))),
        ("file:///srv/patches", RemoteRef(Path("/srv/patches"))),
        ("file:///srv/patches@1.0", RemoteRef(Path("/srv/patches"), version="1.0")),
        ("./adapters/x", PathRef(Path("adapters/x"))),
        ("/abs/dir", PathRef(Path("/abs/dir"))),
    ],
)
def test_parse_patch_ref(text: str, expected: object) -> None:
    assert parse_patch_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "name-without-namespace",
        "a/b/c",
        "org/../x",
        "org/name==not a spec",
        "org/name@",
        "org/name@bad alias!",
        "org/name@1.0==1.0",
        "hf://",
        "hf://org/repo@",
        "hf://org/../repo",
        "file://relative/path",
        "org/name--x",
    ],
)
def test_bad_patch_refs_are_one_line_errors(text: str) -> None:
    with pytest.raises(RefError) as exc:
        parse_patch_ref(text)
    assert "\n" not in str(exc.value)


def test_ref_str_round_trips() -> None:
    for text in ["org/name", "org/name==1.0", "org/name@stable", "hf://org/repo@main", "org/name>=1.0"]:
        assert str(parse_patch_ref(str(parse_patch_ref(text)))) == str(parse_patch_ref(text))


def test_parse_base_ref() -> None:
    assert parse_base_ref("hf://meta/llama@abc123") == HubRef("meta/llama", revision="abc123")
    assert parse_base_ref("some/dir") == PathRef(Path("some/dir"))
    with pytest.raises(RefError):
        parse_base_ref("hf://org/repo==1.0")
