"""Inputs the harness refuses: a corpus of bad files and options, run through the real CLI.

Each case runs ``python -m mmrl_harness ...`` in a fresh working directory and asserts what a
user sees: a non-zero exit, ONE line on stderr naming the problem, no traceback, and nothing
written. Every check happens before a model loads, so each run takes about a second or two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmrl_harness.config_io import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    DefinitionError,
    parse_yaml,
    read_yaml_mapping,
)

#: A module in the working directory that leaves a marker if anything ever imports it.
EVILMOD = "from pathlib import Path\nPath(__file__).with_name('MARKER').write_text('ran')\n"

#: Five levels of nine-fold aliases: 59,049 leaves once expanded (a real bomb just adds levels).
BOMB = """\
  a: &a [x, x, x, x, x, x, x, x, x]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]
"""

SINGLE = "kind: single_turn\nenv: mmrl/ColorShape-v0\n"
FROZEN = "kind: multi_turn\nmax_steps: 3\nenv: FrozenLake-v1\nframe: render\n"
TRAIN = "task: color_shape\noutput_dir: run\n"


def mmrl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, from ``cwd`` (which ``python -m`` puts on sys.path)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMRL_CACHE": str(cwd / ".cache")}
    env.pop("MMRL_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "mmrl_harness", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, one line on stderr containing every needle, no traceback anywhere."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write_files(root: Path, files: dict[str, str]) -> None:
    """Write each file; ``@big`` and ``@deep`` stand for generated over-limit bodies."""
    for name, body in files.items():
        if body == "@big":
            body = SINGLE + "description: '" + "x" * MAX_FILE_BYTES + "'\n"
        elif body == "@deep":
            body = (
                SINGLE + "env_kwargs: {a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}\n"
            )
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)


EVAL = ("eval", "--model", "tiny-llava", "-o", "out.json")

# (id, files in the working directory, CLI arguments, words the one-line error must contain)
CASES: list[tuple[str, dict[str, str], tuple[str, ...], tuple[str, ...]]] = [
    # -- security: env ids that would import code ------------------------------------------
    (
        "cwd-module-eval",
        {"evilmod.py": EVILMOD, "t.yaml": "kind: single_turn\nenv: evilmod:Foo-v0\n"},
        (*EVAL, "--task", "t.yaml"),
        ("t.yaml", "env:", "'evilmod'", "refused", "--allow-env-imports"),
    ),
    (
        "cwd-module-even-when-allowed",
        {"evilmod.py": EVILMOD, "t.yaml": "kind: single_turn\nenv: evilmod:Foo-v0\n"},
        (*EVAL, "--task", "t.yaml", "--allow-env-imports"),
        ("cannot import 'evilmod'", "working directory is not searched"),
    ),
    (
        "cwd-module-train-config-opt-in",
        {
            "evilmod.py": EVILMOD,
            "t.yaml": "kind: single_turn\nenv: evilmod:Foo-v0\n",
            "c.yaml": "task: t.yaml\noutput_dir: run\nallow_env_imports: true\n",
        },
        ("train", "c.yaml"),
        ("cannot import 'evilmod'",),
    ),
    (
        "this-module",
        {"t.yaml": "kind: single_turn\nenv: this:X-v0\n"},
        ("tasks", "show", "t.yaml"),
        ("'this'", "refused"),
    ),
    (
        "os-system",
        {"t.yaml": "kind: single_turn\nenv: os:system\n"},
        ("tasks", "show", "t.yaml"),
        ("'os'", "refused"),
    ),
    # -- alias bombs in every free-form field ----------------------------------------------
    (
        "bomb-env_kwargs",
        {"t.yaml": SINGLE + "env_kwargs:\n" + BOMB},
        ("tasks", "show", "t.yaml"),
        ("env_kwargs.b[0]", "alias *a refused"),
    ),
    (
        "bomb-eval-task",
        {"t.yaml": SINGLE + "env_kwargs:\n" + BOMB},
        (*EVAL, "--task", "t.yaml"),
        ("alias *a refused",),
    ),
    (
        "bomb-task_overrides",
        {"c.yaml": TRAIN + "task_overrides:\n" + BOMB},
        ("train", "c.yaml"),
        ("c.yaml", "task_overrides.b[0]", "alias"),
    ),
    (
        "bomb-grpo",
        {"c.yaml": TRAIN + "grpo:\n" + BOMB},
        ("train", "c.yaml"),
        ("grpo.b[0]", "alias"),
    ),
    (
        "bomb-override-value",
        {},
        (*EVAL, "--task", "color_shape", "--override", "env_kwargs.x=[&a [1, 2], *a, *a]"),
        ("--override env_kwargs.x", "alias"),
    ),
    # -- malformed files and limits --------------------------------------------------------
    (
        "yaml-syntax",
        {"t.yaml": "kind: single_turn\nenv: [unclosed\n"},
        ("tasks", "show", "t.yaml"),
        ("t.yaml", "YAML syntax error", "line"),
    ),
    (
        "duplicate-key",
        {"c.yaml": TRAIN + "task: counting\n"},
        ("train", "c.yaml"),
        ("c.yaml", "duplicate key 'task'"),
    ),
    (
        "not-a-mapping",
        {"t.yaml": "- kind\n- env\n"},
        ("tasks", "show", "t.yaml"),
        ("t.yaml", "holds a list", "mapping of task fields"),
    ),
    (
        "missing-task-file",
        {},
        (*EVAL, "--task", "nope.yaml"),
        ("nope.yaml", "cannot read the file", "No such file"),
    ),
    ("missing-train-config", {}, ("train", "nope.yaml"), ("nope.yaml", "cannot read the file")),
    (
        "task-path-is-a-folder",
        {"d.yaml/x": ""},
        ("tasks", "show", "d.yaml"),
        ("d.yaml", "cannot read the file", "Is a directory"),
    ),
    ("over-size-limit", {"t.yaml": "@big"}, ("tasks", "show", "t.yaml"), ("byte limit",)),
    (
        "over-depth-limit",
        {"t.yaml": "@deep"},
        ("tasks", "show", "t.yaml"),
        ("env_kwargs.a", f"more than {MAX_DEPTH} levels"),
    ),
    # -- command-line options --------------------------------------------------------------
    ("seeds-not-int", {}, (*EVAL, "--task", "color_shape", "--seeds", "abc"), ("--seeds", "'abc'")),
    (
        "seeds-negative",
        {},
        (*EVAL, "--task", "color_shape", "--seeds=-1,2"),
        ("--seeds", "negative"),
    ),
    (
        "output-is-dir",
        {"res/k": ""},
        (*EVAL, "--task", "color_shape", "-o", "res"),
        ("is a directory",),
    ),
    (
        "output-under-file",
        {"afile": ""},
        (*EVAL, "--task", "color_shape", "-o", "afile/out.json"),
        ("afile", "not a folder"),
    ),
    (
        "override-not-assignment",
        {},
        (*EVAL, "--task", "color_shape", "--override", "max_steps"),
        ("--override", "KEY=VALUE"),
    ),
    (
        "override-into-scalar",
        {},
        (*EVAL, "--task", "numberline", "--override", "max_steps.x=1"),
        ("max_steps.x", "not a mapping"),
    ),
    (
        "train-override-into-scalar",
        {"c.yaml": TRAIN + "seed: 3\n"},
        ("train", "c.yaml", "--override", "seed.x=1"),
        ("c.yaml", "seed.x", "not a mapping"),
    ),
    # -- env ids and action maps -----------------------------------------------------------
    (
        "unknown-env-show",
        {"t.yaml": "kind: single_turn\nenv: mmrl/ColorShap-v0\n"},
        ("tasks", "show", "t.yaml"),
        ("unknown env id", "did you mean 'mmrl/ColorShape-v0'"),
    ),
    (
        "unknown-env-eval",
        {"t.yaml": "kind: multi_turn\nmax_steps: 3\nenv: FrozenLake-v9\n"},
        (*EVAL, "--task", "t.yaml"),
        ("unknown env id 'FrozenLake-v9'", "FrozenLake-v1"),
    ),
    (
        "actions-missing-one",
        {"t.yaml": FROZEN + "actions: {left: 0, down: 1, right: 2}\n"},
        (*EVAL, "--task", "t.yaml"),
        ("actions:", "no word maps to action(s) [3]"),
    ),
    (
        "actions-outside-space",
        {"t.yaml": FROZEN + "actions: {left: 0, down: 1, right: 2, up: 3, jump: 4}\n"},
        (*EVAL, "--task", "t.yaml"),
        ("actions.jump", "not in the action space"),
    ),
    # -- training configs: names checked against the registries ----------------------------
    (
        "train-misspelt-adapter",
        {"c.yaml": TRAIN + "fusion: {name: wieghted_sum}\n"},
        ("train", "c.yaml"),
        ("fusion.name", "Did you mean 'weighted_sum'"),
    ),
    (
        "train-misspelt-task",
        {"c.yaml": "task: countingg\noutput_dir: run\n"},
        ("train", "c.yaml"),
        ("unknown task 'countingg'", "Did you mean 'counting'"),
    ),
    (
        "train-misspelt-algorithm",
        {"c.yaml": TRAIN + "algorithm: grop\n"},
        ("train", "c.yaml"),
        ("c.yaml", "algorithm"),
    ),
]


@pytest.mark.parametrize(
    ("files", "args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_in_one_line_before_anything_runs(
    tmp_path: Path, files: dict[str, str], args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    write_files(tmp_path, files)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    started = time.perf_counter()
    assert_refused(mmrl(tmp_path, *args), *needles)
    # Nothing written: no results file, no run folder, no marker from an imported module.
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".cache" not in p.parts)
    assert after == before
    # Generous bound for a shared CPU; loading even the tiny model and evaluating takes far longer.
    assert time.perf_counter() - started < 60


def test_cwd_module_is_never_imported_and_nothing_is_printed(tmp_path: Path) -> None:
    write_files(tmp_path, {"evilmod.py": EVILMOD, "t.yaml": "kind: single_turn\nenv: evilmod:X\n"})
    proc = mmrl(tmp_path, "tasks", "show", "t.yaml", "--allow-env-imports")
    assert_refused(proc, "cannot import 'evilmod'")
    assert not (tmp_path / "MARKER").exists() and proc.stdout == ""


def test_zen_of_python_is_not_printed(tmp_path: Path) -> None:
    write_files(tmp_path, {"t.yaml": "kind: single_turn\nenv: this:X-v0\n"})
    proc = mmrl(tmp_path, "tasks", "show", "t.yaml")
    assert_refused(proc, "refused")
    assert "Beautiful is better" not in proc.stdout + proc.stderr


def test_registered_id_with_a_prefix_is_refused_with_the_fix(tmp_path: Path) -> None:
    write_files(tmp_path, {"t.yaml": FROZEN.replace("FrozenLake", "gymnasium.envs:FrozenLake")})
    assert_refused(mmrl(tmp_path, "tasks", "show", "t.yaml"), "drop the prefix: 'FrozenLake-v1'")


def test_opt_in_imports_an_installed_module_that_registers_the_env(tmp_path: Path) -> None:
    # The module lives outside the working directory (on PYTHONPATH, as if installed).
    site = tmp_path / "site"
    site.mkdir()
    (site / "extenvs.py").write_text(
        "import gymnasium\n"
        "gymnasium.register('ext/Lake-v0', entry_point='gymnasium.envs.toy_text:FrozenLakeEnv')\n"
    )
    work = tmp_path / "work"
    write_files(work, {"t.yaml": FROZEN.replace("FrozenLake-v1", "extenvs:ext/Lake-v0")})
    env = {**os.environ, "PYTHONPATH": str(site)}
    args = [sys.executable, "-m", "mmrl_harness", "tasks", "show", "t.yaml"]
    refused = subprocess.run(args, cwd=work, capture_output=True, text=True, env=env)
    assert_refused(refused, "'extenvs'", "refused")
    allowed = subprocess.run(
        [*args, "--allow-env-imports"], cwd=work, capture_output=True, text=True, env=env
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "env: extenvs:ext/Lake-v0" in allowed.stdout


def test_mmrl_debug_keeps_the_traceback(tmp_path: Path) -> None:
    write_files(tmp_path, {"t.yaml": "kind: single_turn\nenv: this:X-v0\n"})
    env = {**os.environ, "MMRL_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mmrl_harness", "tasks", "show", "t.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "TaskDefinitionError" in proc.stderr


# -- the reader itself, in process -------------------------------------------------------------
def test_a_billion_laughs_is_refused_before_it_expands() -> None:
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.perf_counter()
    with pytest.raises(DefinitionError) as caught:
        parse_yaml("\n".join(levels) + "\n", "bomb.yaml")  # 9**10 = 3.5e9 leaves if expanded
    # Refused at the first alias event: well under a second even on a loaded machine.
    assert time.perf_counter() - started < 1.0
    assert caught.value.fields == ["a1[0]"] and "bomb.yaml" in str(caught.value)


def test_anchors_without_aliases_and_plain_data_still_read() -> None:
    text = textwrap.dedent(
        """\
        a: &named {b: [1, 2.5, yes, null]}
        c: "text"
        """
    )
    assert parse_yaml(text) == {"a": {"b": [1, 2.5, True, None]}, "c": "text"}


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_file_is_cut_at_the_size_limit() -> None:
    # stat() says 0 bytes; a bounded read is what keeps this from reading forever.
    with pytest.raises(DefinitionError, match="byte limit"):
        read_yaml_mapping(Path("/dev/zero"))


def test_python_tags_are_refused() -> None:
    with pytest.raises(DefinitionError, match="YAML syntax error"):
        parse_yaml("!!python/object/apply:os.system ['echo hi']\n", "t.yaml")


def test_tasks_check_reports_an_unknown_env_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrl_harness import registry
    from mmrl_harness.tasks import TaskFolder, list_tasks

    monkeypatch.setattr(registry.tasks, "_local", {})  # the plugin lives for this test only
    write_files(tmp_path, {"typo.yaml": "kind: single_turn\nenv: mmrl/Countng-v0\n"})
    registry.tasks.register("mine", TaskFolder(tmp_path))
    listed = {s.name: s for s in list_tasks()}
    assert listed["typo"].error is None  # plain listing reads YAML only
    checked = {s.name: s for s in list_tasks(check=True)}
    assert "unknown env id 'mmrl/Countng-v0'; did you mean 'mmrl/Counting-v0'" in str(
        checked["typo"].error
    )
