"""Fixtures of the server tests: tiny models saved once per session as checkpoint folders."""

from __future__ import annotations

import pytest

from _serve_helpers import build_classifier, build_patchcore


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """{"cls": checkpoint folder of a tiny classifier, "pc": of a tiny PatchCore}."""
    root = tmp_path_factory.mktemp("serve_models")
    build_classifier().save(root / "cls")
    build_patchcore().save(root / "pc")
    return {"cls": root / "cls", "pc": root / "pc"}
