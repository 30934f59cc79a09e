"""Fixtures of the validation tests: a pico base, θ′, an eval folder and trained patches (session-scoped)."""

from __future__ import annotations

import os

# before huggingface_hub is imported anywhere: the test server speaks LFS, not Xet
os.environ["HF_HUB_DISABLE_XET"] = "1"

from pathlib import Path

import picomodels
import pytest
from evaltools import BAD, GOOD, make_eval_base, make_eval_folder, train_preference_adapter


@pytest.fixture(scope="session")
def eval_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evalmodels")


@pytest.fixture(scope="session")
def eval_base(eval_models: Path) -> Path:
    return make_eval_base(eval_models / "base")


@pytest.fixture(scope="session")
def eval_base_v2(eval_models: Path, eval_base: Path) -> Path:
    return picomodels.make_updated_base(eval_base, eval_models / "base-v2", scale=0.002)


@pytest.fixture(scope="session")
def eval_folder(eval_models: Path) -> Path:
    return make_eval_folder(eval_models / "eval")


@pytest.fixture(scope="session")
def good_adapter(eval_models: Path, eval_base: Path) -> Path:
    return train_preference_adapter(eval_base, eval_models / "good", prefer=GOOD)


@pytest.fixture(scope="session")
def bad_adapter(eval_models: Path, eval_base: Path) -> Path:
    return train_preference_adapter(eval_base, eval_models / "bad", prefer=BAD)
