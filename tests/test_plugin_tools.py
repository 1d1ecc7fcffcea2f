"""``mmrl plugins new`` and ``doctor``, and the task checks of ``mmrl_harness.testing``.

The scaffold test is real: scaffold into a temporary folder, ``pip install --target`` it,
run its own pytest in a fresh interpreter that sees only that install, then run ``doctor``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
from support import pip_install_target
from typer.testing import CliRunner

from mmrl_harness import registry
from mmrl_harness.cli import app
from mmrl_harness.envs.base import ImageTextEnv
from mmrl_harness.tasks import task_factory
from mmrl_harness.tasks.loader import task_from_dict
from mmrl_harness.testing import ContractViolation, check_task


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter that sees the installed plugins (and the harness under test)."""
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_scaffolded_plugins_pass_their_own_tests_and_doctor_catches_a_broken_one(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    for kind, name in [
        ("fusion", "scaffold_film"),
        ("task", "scaffold_task"),
        ("architecture", "scaffold_family"),
        ("fusion", "padded_film"),
    ]:
        out = CliRunner().invoke(
            app, ["plugins", "new", name, "--kind", kind, "--dir", str(tmp_path / name)]
        )
        assert out.exit_code == 0, out.output
    # Break one adapter the way the issue describes: pool every position, padding included.
    module = tmp_path / "padded_film" / "mmrl_padded_film" / "__init__.py"
    source = module.read_text()
    assert "text = inputs.pooled_prompt_text()" in source
    module.write_text(source.replace("text = inputs.pooled_prompt_text()", "text = embeds.mean(1)"))
    names = ("scaffold_film", "scaffold_task", "scaffold_family", "padded_film")
    pip_install_target(site, *(tmp_path / name for name in names))

    tests = [
        str(tmp_path / n / "tests") for n in ("scaffold_film", "scaffold_task", "scaffold_family")
    ]
    own = _run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, cwd=tmp_path)
    assert own.returncode == 0, own.stdout + own.stderr
    assert "3 passed" in own.stdout

    listed = _run(site, "-m", "mmrl_harness", "plugins", cwd=tmp_path)
    for name in names:
        assert name in listed.stdout

    broken = _run(
        site,
        "-m",
        "mmrl_harness",
        "plugins",
        "doctor",
        "padded_film",
        "--family",
        "tiny-llava",
        "--check",
        "batch_invariance",
        "--check",
        "identity",
        cwd=tmp_path,
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAILED" in broken.stdout and "prompt_mask" in broken.stdout
    rows = {
        check: next(line for line in broken.stdout.splitlines() if f"{check} [tiny-llava]" in line)
        for check in ("batch_invariance", "identity")
    }
    assert " fail " in rows["batch_invariance"]  # it depends on the batch padding
    assert " ok " in rows["identity"]  # while still starting as the identity


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plugins", "new", "My-Film"], "must be lower-case letters"),
        (["plugins", "new", "film", "--kind", "sampler"], "unknown plugin kind 'sampler'"),
    ],
)
def test_plugins_new_refuses_bad_input(args: list[str], message: str) -> None:
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1 and message in out.output


def test_plugins_new_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    out = CliRunner().invoke(app, ["plugins", "new", "film", "--dir", str(tmp_path)])
    assert out.exit_code == 1 and "is not empty" in out.output
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_doctor_on_an_unknown_or_disabled_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    out = CliRunner().invoke(app, ["plugins", "doctor", "no_such_plugin"])
    assert out.exit_code == 1 and "no installed plugin is called 'no_such_plugin'" in out.output
    monkeypatch.setenv(registry.DISABLE_ENV, "fusion:weighted_sum")
    registry.reset()
    try:
        out = CliRunner().invoke(app, ["plugins", "doctor", "weighted_sum"])
        assert out.exit_code == 1 and "is disabled by MMRL_DISABLE_PLUGINS" in out.output
        listing = CliRunner().invoke(app, ["plugins", "--kind", "fusion"])
        assert "disabled" in listing.output
    finally:
        monkeypatch.delenv(registry.DISABLE_ENV)
        registry.reset()


def test_doctor_checks_a_builtin_algorithm_by_name() -> None:
    out = CliRunner().invoke(app, ["plugins", "doctor", "ppo"])
    assert out.exit_code == 0, out.output
    assert "algorithms plugin 'ppo'" in out.output and "passed" in out.output


# -- task checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["color_shape", "numberline", "blackjack"])
def test_builtin_tasks_meet_the_task_contract(name: str) -> None:
    report = check_task(name)
    assert [r.name for r in report.results] == [
        "loads",
        "seeding",
        "determinism",
        "action_map",
        "oracle",
    ]


class _Unseeded(ImageTextEnv):
    """Draws its colour from numpy's global generator: reset(seed) does not fix it."""

    action_words = ("yes", "no")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(32)
        self.action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        self._level = int(np.random.randint(256))
        return self._observation(), {}

    def step(self, action: Any) -> Any:
        return self._observation(), 0.0, True, False, {"success": False}

    def _draw(self) -> np.ndarray:
        return np.full((32, 32, 3), self._level, dtype=np.uint8)

    def _text(self) -> str:
        return "yes or no ?"


def test_an_env_that_ignores_its_seed_is_caught() -> None:
    if "mmrl_test/Unseeded-v0" not in gymnasium.registry:
        gymnasium.register("mmrl_test/Unseeded-v0", entry_point=_Unseeded)
    task = task_from_dict(
        {
            "name": "unseeded",
            "kind": "single_turn",
            "env": "mmrl_test/Unseeded-v0",
            "prompt": "{text}",
        }
    )
    with pytest.raises(
        ContractViolation, match=r"seeding: two fresh environments reset with seed 0"
    ):
        check_task(task)


def test_a_task_of_a_broken_plugin_is_not_reported_as_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmrl_harness.tasks import get_task
    from mmrl_harness.tasks.files import UnknownTaskError

    def broken() -> list[Any]:
        raise RuntimeError("no network")

    monkeypatch.setattr(registry.tasks, "_local", {})
    registry.tasks.register("cards", task_factory(broken))
    with pytest.raises(UnknownTaskError) as err:
        get_task("points24")
    message = str(err.value)
    assert (
        "tasks plugin that failed to load ('cards': tasks plugin 'cards': its factory raised"
        in message
    )
    available = message.split("Available: ")[1].split(".")[0]
    assert "cards" not in available.split(", ")  # the plugin's name is not listed as a task
