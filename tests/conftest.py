"""Shared fixtures: an isolated tiny-model cache and the tiny VLMs, each built once per session."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub (it reads this once, at import): tests never download,
# and an unknown Hub id fails at once instead of after ~25 s of connection retries.
os.environ["HF_HUB_OFFLINE"] = "1"
# Under pytest-xdist (`pytest -n 2`, what CI runs) each worker gets one thread: workers already
# fill the cores, and oversubscribed OpenMP threads spin against each other. Read by torch when
# it is first imported, and inherited by the subprocesses tests start.
# xdist also sets COLUMNS=80 in its workers, which would freeze the width of every rich Console
# built at import (the CLI's) and make CliRunner's COLUMNS moot: drop it, as without xdist.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.pop("COLUMNS", None)

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mmrl_harness.models.loading import LoadedVLM


@pytest.fixture(scope="session", autouse=True)
def mmrl_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A per-session ``MMRL_CACHE``, so tests never read or write the user's cache."""
    cache = tmp_path_factory.mktemp("mmrl_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMRL_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_llava(mmrl_cache: Path) -> LoadedVLM:
    """``tiny-llava`` loaded through ``load_vlm`` (shared: do not train it in place)."""
    from mmrl_harness.models.loading import load_vlm

    return load_vlm("tiny-llava")


@pytest.fixture(scope="session")
def tiny_qwen(mmrl_cache: Path) -> LoadedVLM:
    """``tiny-qwen2-vl`` loaded through ``load_vlm`` (shared: do not train it in place)."""
    from mmrl_harness.models.loading import load_vlm

    return load_vlm("tiny-qwen2-vl")


@pytest.fixture(scope="session")
def tiny_qwen2_5(mmrl_cache: Path) -> LoadedVLM:
    """``tiny-qwen2.5-vl`` loaded through ``load_vlm`` (shared: do not train it in place)."""
    from mmrl_harness.models.loading import load_vlm

    return load_vlm("tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_idefics3(mmrl_cache: Path) -> LoadedVLM:
    """``tiny-idefics3`` loaded through ``load_vlm`` (shared: do not train it in place)."""
    from mmrl_harness.models.loading import load_vlm

    return load_vlm("tiny-idefics3")


@pytest.fixture(scope="session")
def tiny_gemma3(mmrl_cache: Path) -> LoadedVLM:
    """``tiny-gemma3`` loaded through ``load_vlm`` (shared: do not train it in place)."""
    from mmrl_harness.models.loading import load_vlm

    return load_vlm("tiny-gemma3")
