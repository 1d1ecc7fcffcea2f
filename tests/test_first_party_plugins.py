"""The first-party plugin distributions in plugins/: built as wheels, installed, used by the harness.

Each package is built with ``pip wheel`` and installed with ``pip install --target`` into a
throwaway site folder (real installed metadata and entry points, while the shared virtual
environment stays untouched, so other test processes never see the plugins). Fresh interpreters
with that folder on ``PYTHONPATH`` then list the plugins, evaluate with them through the CLI and
run each package's own tests against the installed wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mmrl-film": "mmrl_film", "mmrl-gym-cards": "mmrl_gym_cards"}


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--no-deps", "--no-build-isolation"],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding both first-party plugins, installed from freshly built wheels."""
    root = tmp_path_factory.mktemp("first_party")
    wheels, site = root / "wheels", root / "site"
    for package in PACKAGES:
        # Build from a copy: setuptools writes build/ and *.egg-info into the source folder.
        source = root / "src" / package
        shutil.copytree(ROOT / "plugins" / package, source, ignore=shutil.ignore_patterns("tests"))
        _pip("wheel", "--wheel-dir", str(wheels), str(source))
    built = sorted(wheels.glob("*.whl"))
    assert [w.name.split("-")[0] for w in built] == ["mmrl_film", "mmrl_gym_cards"]
    _pip("install", "--target", str(site), *map(str, built))
    return site


def _run(
    site: Path, mmrl_cache: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "MMRL_CACHE": str(mmrl_cache),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "300",
    }
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_mmrl_plugins_lists_and_loads_both(site: Path, mmrl_cache: Path) -> None:
    out = _run(site, mmrl_cache, "-m", "mmrl_harness", "plugins", "--load")
    assert out.returncode == 0, out.stderr
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.stdout.splitlines()]
    rows = {row[0]: row[1:] for row in cells if row}
    assert rows["film"] == ["fusion", "mmrl-film", "0.1.0", "ok"]
    assert rows["gym_cards"] == ["tasks", "mmrl-gym-cards", "0.1.0", "ok"]


def test_mmrl_tasks_lists_the_task_pack(site: Path, mmrl_cache: Path) -> None:
    out = _run(site, mmrl_cache, "-m", "mmrl_harness", "tasks")
    assert out.returncode == 0, out.stderr
    for task in ("ezpoints", "points24", "points24_easy"):
        assert task in out.stdout


def test_mmrl_eval_runs_a_gym_cards_task_with_the_film_adapter(
    site: Path, mmrl_cache: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results.json"
    out = _run(
        site, mmrl_cache, "-m", "mmrl_harness", "eval", "--task", "ezpoints",
        "--model", "tiny-llava", "--fusion", "film", "--fusion-option", "bottleneck=8",
        "--episodes", "2", "--output", str(results),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads(results.read_text())
    text = json.dumps(record)
    assert '"film"' in text and "mmrl-film" in text and "mmrl-gym-cards" in text
    assert "ezpoints" in text


@pytest.mark.parametrize("package", list(PACKAGES))
def test_each_package_passes_its_own_tests_once_installed(
    site: Path, mmrl_cache: Path, package: str, tmp_path: Path
) -> None:
    # Run from an empty folder so the installed wheel, not the source tree, is imported.
    tests = ROOT / "plugins" / package / "tests"
    out = _run(
        site, mmrl_cache, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    imported = _run(
        site, mmrl_cache, "-c", f"import {PACKAGES[package]} as m; print(m.__file__)", cwd=tmp_path
    )
    assert imported.stdout.startswith(str(site))
