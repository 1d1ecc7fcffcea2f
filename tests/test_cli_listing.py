"""The console script answers ``mmrl plugins`` / ``mmrl tasks`` without typer, byte for byte as
the typer app does; everything else goes to typer.

Both paths run in fresh interpreters against a real plugin distribution (a ``.dist-info`` folder
that ``importlib.metadata`` discovers) with a broken, a malformed and a disabled plugin, so the
red statuses, the note and the exit codes are compared too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmrl_harness.entry import Listing, parse_listing

ENTRY_POINTS = """
[mmrl_harness.architectures]
broken_arch = listing_demo_broken:ANATOMY
hidden_arch = listing_demo_broken:ANATOMY
malformed_arch = listing_demo_broken

[mmrl_harness.fusion]
broken_fusion = listing_demo_broken:Adapter

[mmrl_harness.tasks]
broken_tasks = listing_demo_broken:TASKS
"""

#: The console script (fast path) and the typer app, each in a fresh interpreter, both named
#: ``mmrl`` as the installed script is (click derives the completion variable from the name).
LAUNCH = "import sys; sys.argv[0] = 'mmrl'; from mmrl_harness.{} import main; main()"
FAST = [sys.executable, "-c", LAUNCH.format("entry")]
TYPER = [sys.executable, "-c", LAUNCH.format("cli")]

PLUGINS_ARGS = [
    [],
    ["--no-load"],
    ["--kind", "fusion"],
    ["--kind=fusion"],
    ["--kind", "architectures"],  # a malformed plugin: the note, exit 0 without --load
    ["--kind", "tasks", "--kind", "algorithms"],  # the last one wins
    ["--kind", "fusio"],  # unknown kind: error with a suggestion, exit 1
    ["--kind", ""],  # empty: every kind
    ["--kind="],
    ["--kind", "fusion", "--load"],  # a plugin fails to load: exit 1
    ["--load", "--no-load", "--kind=fusion", "--load"],
]
TASKS_ARGS = [[], ["--check"], ["--check", "--check"]]
CASES = [["plugins", *a] for a in PLUGINS_ARGS] + [["tasks", *a] for a in TASKS_ARGS]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding an installed distribution's metadata and its (broken) module."""
    site = tmp_path_factory.mktemp("site")
    info = site / "mmrl_listing_demo-1.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mmrl-listing-demo\nVersion: 1.2.0\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "listing_demo_broken.py").write_text("raise RuntimeError('boom: no kernel')\n")
    return site


def run(prefix: list[str], args: list[str], site: Path, **env: str) -> tuple[int, str, str]:
    """``(status, stdout, stderr)`` of one fresh interpreter; bytes kept as they are."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "COLUMNS": "150",
        "MMRL_DISABLE_PLUGINS": "architectures:hidden_arch",
        **env,
    }
    for name in ("FORCE_COLOR", "NO_COLOR", "MMRL_DEBUG"):
        if name not in env:
            full_env.pop(name, None)
    out = subprocess.run([*prefix, *args], capture_output=True, env=full_env, timeout=300)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a) or "-")
def test_fast_path_prints_what_typer_prints(plugin_site: Path, args: list[str]) -> None:
    assert parse_listing(args) is not None  # the fast path is really taken
    fast = run(FAST, args, plugin_site)
    assert fast == run(TYPER, args, plugin_site)
    assert fast[1] or fast[2]  # something was printed (not two empty failures)


@pytest.mark.parametrize(
    "args",
    [["plugins", "--kind", "architectures"], ["plugins", "--kind", "fusio"], ["tasks"]],
    ids=lambda a: " ".join(a),
)
def test_fast_path_prints_the_same_colours(plugin_site: Path, args: list[str]) -> None:
    fast = run(FAST, args, plugin_site, FORCE_COLOR="1")
    assert "\x1b[" in fast[1] + fast[2]  # styled: the red statuses and error are compared too
    assert fast == run(TYPER, args, plugin_site, FORCE_COLOR="1")


def test_outcomes_of_the_plugin_cases(plugin_site: Path) -> None:
    status, out, _ = run(FAST, ["plugins", "--kind", "architectures"], plugin_site)
    assert status == 0
    assert "malformed_arch" in out and "invalid" in out and "disabled" in out
    assert "mmrl-listing-demo" in out and "1.2.0" in out
    assert "1 plugin(s) cannot be used; the others work." in out
    status, out, _ = run(FAST, ["plugins", "--kind", "fusion", "--load"], plugin_site)
    assert status == 1 and "failed:" in out and "boom: no kernel" in out
    status, _, err = run(FAST, ["plugins", "--kind", "fusio"], plugin_site)
    assert status == 1 and "Did you mean 'fusion'?" in err


def test_fast_path_imports_no_typer_pydantic_or_torch(plugin_site: Path) -> None:
    code = (
        "import sys\n"
        "from mmrl_harness.entry import main\n"
        "for args in (['plugins'], ['tasks']):\n"
        "    sys.argv = ['mmrl', *args]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('IMPORTED', sorted(m for m in ('typer', 'pydantic', 'torch', 'listing_demo_broken')"
        " if m in sys.modules))\n"
    )
    status, out, err = run([sys.executable, "-c", code], [], plugin_site)
    assert status == 0, err
    assert out.splitlines()[-1] == "IMPORTED []"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plugins"], Listing("plugins")),
        (["plugins", "--load", "--kind", "fusion"], Listing("plugins", "fusion", load=True)),
        (["plugins", "--kind=a", "--kind", "b", "--no-load"], Listing("plugins", "b")),
        (["plugins", "--kind="], Listing("plugins", "")),
        (["tasks", "--check"], Listing("tasks", check=True)),
    ],
)
def test_listing_command_lines_are_parsed(args: list[str], expected: Listing) -> None:
    assert parse_listing(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["eval", "--task", "numberline"],
        ["plugins", "--help"],
        ["plugins", "doctor"],
        ["plugins", "new", "film"],
        ["plugins", "--kind"],  # missing value: typer's error
        ["plugins", "--kind", "--load"],  # may be a missing value: typer decides
        ["plugins", "--check"],
        ["plugins", "--load=1"],
        ["plugins", "--"],
        ["tasks", "show", "numberline"],
        ["tasks", "--no-check"],
        ["tasks", "--kind", "fusion"],
    ],
)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert parse_listing(args) is None


def test_left_to_typer_runs_typer(plugin_site: Path) -> None:
    status, _, err = run(FAST, ["plugins", "--kind"], plugin_site)
    assert status == 2 and "--kind" in err  # typer's usage error, not a listing
    status, out, _ = run(FAST, ["tasks", "--help"], plugin_site)
    assert status == 0 and "--check" in out


def test_shell_completion_requests_go_to_typer(plugin_site: Path) -> None:
    # With click's completion variable set, typer answers (whatever it answers) in both paths.
    env = {"_MMRL_COMPLETE": "bash_complete", "COMP_WORDS": "mmrl plug", "COMP_CWORD": "1"}
    fast = run(FAST, ["plugins"], plugin_site, **env)
    assert fast == run(TYPER, ["plugins"], plugin_site, **env)
