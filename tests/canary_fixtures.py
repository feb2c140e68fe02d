"""Fixtures of the canary tests (test_canary.py, test_canary_ray.py): the tiny base with three
adapters registered, a canary file, the embedder, and settings with content risk off."""

from __future__ import annotations

import os

import pytest

from lorawatch.registry import aliases as registry_aliases
from lorawatch.registry import bases as registry_bases
from lorawatch.registry import store as registry_store
from lorawatch.registry import versions as registry_versions
from tests.tiny_models import write_canary_dataset


@pytest.fixture(scope="session")
def embedder():
    from lorawatch.monitors.embeddings import Embedder

    # On a GPU machine without the model package, a copy of the same model can be named here.
    return Embedder(os.environ.get("LORAWATCH_TEST_EMBEDDING_MODEL"))


@pytest.fixture
def canary_file(tmp_path):
    return write_canary_dataset(tmp_path / "canary.jsonl", n=24)


@pytest.fixture
def settings(lw_env, tmp_path):
    """Settings for drift tests: content risk is tested in test_risk.py, so it is off here."""
    from lorawatch.settings import load_settings

    (tmp_path / "lorawatch.toml").write_text("[risk]\nenabled = false\n")
    return load_settings()


@pytest.fixture
def registered(db, settings, tiny_base, trained_adapter, zero_adapter, second_adapter):
    """The tiny base with three adapters: trained (v1 in production), zero, and other."""

    store = registry_store.Store.from_settings(settings)
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=tiny_base, actor="t")
        registry_versions.register_version(s, store, adapter="trained", path=trained_adapter, base="tiny", actor="t")
        registry_versions.register_version(s, store, adapter="zero", path=zero_adapter, base="tiny", actor="t")
        registry_versions.register_version(s, store, adapter="other", path=second_adapter, base="tiny", actor="t")
        registry_aliases.promote(s, adapter="trained", version="v1", actor="t", reason="r")
    return store
