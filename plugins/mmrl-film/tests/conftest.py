"""Offline, isolated tiny-model cache and the tiny VLMs the FiLM tests run on."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: never download

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def mmrl_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A per-session ``MMRL_CACHE``, so the tests never touch the user's cache."""
    cache = tmp_path_factory.mktemp("mmrl_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMRL_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session", params=["tiny-llava", "tiny-qwen2-vl"])
def loaded(request: pytest.FixtureRequest, mmrl_cache: Path) -> Any:
    """Each tiny family with a different image-token layout (shared: attach to copies only)."""
    from mmrl_harness.models.loading import load_vlm

    return load_vlm(request.param)
