"""The plugin registry, exercised with a real pip-installed throwaway plugin distribution."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import pip_install_target

from mmrl_harness.registry import (
    PLUGIN_API_VERSION,
    PluginValidationError,
    Registry,
    UnknownPluginError,
    get_registry,
)

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "mmrl-throwaway-plugins"
version = "0.3.1"

[tool.setuptools]
py-modules = ["throwaway_broken", "throwaway_future", "throwaway_good"]

[project.entry-points."mmrl_harness.architectures"]
broken_arch = "throwaway_broken:ANATOMY"
future_arch = "throwaway_future:ANATOMY"
good_arch = "throwaway_good:ANATOMY"
malformed_arch = "throwaway_good"
"""

GOOD = """
from mmrl_harness.models.families.llava import LLAVA
import dataclasses
ANATOMY = dataclasses.replace(
    LLAVA, family="throwaway", model_types=("throwaway",), tiny_model=None, build_tiny=None
)
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``pip install --target`` of a plugin distribution; returns the site dir."""
    root = tmp_path_factory.mktemp("plugin")
    src, site = root / "src", root / "site"
    src.mkdir()
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / "throwaway_broken.py").write_text("raise RuntimeError('boom: missing CUDA kernel')\n")
    (src / "throwaway_future.py").write_text(
        GOOD + "ANATOMY = dataclasses.replace(ANATOMY, plugin_api_version=99)\n"
    )
    (src / "throwaway_good.py").write_text(GOOD)
    pip_install_target(site, src)
    return site


def run_python(site: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter that sees the installed plugin distribution."""
    full_env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "300", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def test_listing_reads_metadata_without_importing_plugins_or_torch(plugin_site: Path) -> None:
    out = run_python(
        plugin_site,
        """
        import sys
        from mmrl_harness.cli import app
        try:
            app(["plugins"])
        except SystemExit as exit:
            assert not exit.code, exit.code
        print("IMPORTED", sorted(m for m in sys.modules if m == "torch" or m.startswith("throwaway")))
    """,
    )
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout
    assert "mmrl-throwaway-plugins" in out.stdout and "0.3.1" in out.stdout
    assert "malformed_arch" in out.stdout and "invalid" in out.stdout
    for builtin in ("llava", "qwen2_vl", "concat"):
        assert builtin in out.stdout


def test_broken_plugin_is_reported_and_the_others_keep_working(plugin_site: Path) -> None:
    out = run_python(
        plugin_site,
        """
        from mmrl_harness.registry import architectures, PluginError
        results = architectures.load_all()
        for name, obj in sorted(results.items()):
            print(name, "FAILED" if isinstance(obj, PluginError) else "OK", obj if isinstance(obj, PluginError) else "")
        assert architectures.load("good_arch").family == "throwaway"
        assert architectures.load("llava").family == "llava"
    """,
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["llava"].startswith("OK") and lines["qwen2_vl"].startswith("OK")
    assert lines["good_arch"].startswith("OK")
    broken = lines["broken_arch"]
    assert broken.startswith("FAILED")
    assert (
        "mmrl-throwaway-plugins 0.3.1" in broken
        and "RuntimeError: boom: missing CUDA kernel" in broken
    )


def test_cli_load_shows_failed_plugin_with_its_error(plugin_site: Path) -> None:
    out = run_python(
        plugin_site,
        """
        from mmrl_harness.cli import app
        app(["plugins", "--kind", "architectures", "--load"])
    """,
    )
    assert "broken_arch" in out.stdout and "failed" in out.stdout and "boom" in out.stdout
    assert "cannot be used; the others work" in out.stdout
    assert out.returncode == 1  # --load is a check: a failed plugin fails the command


def test_naming_a_broken_plugin_fails_loudly_with_its_error(plugin_site: Path) -> None:
    out = run_python(
        plugin_site,
        """
        from mmrl_harness.registry import architectures
        architectures.load("broken_arch")
    """,
    )
    assert out.returncode != 0
    assert "PluginLoadError" in out.stderr
    assert "'broken_arch' from mmrl-throwaway-plugins 0.3.1 failed to load" in out.stderr
    assert "RuntimeError: boom: missing CUDA kernel" in out.stderr


def test_api_version_mismatch_is_a_clear_error(plugin_site: Path) -> None:
    out = run_python(
        plugin_site,
        """
        from mmrl_harness.registry import architectures
        architectures.load("future_arch")
    """,
    )
    assert out.returncode != 0
    assert "PluginValidationError" in out.stderr
    assert (
        f"targets plugin API 99, but this mmrl-harness implements plugin API {PLUGIN_API_VERSION}"
        in out.stderr
    )


def test_malformed_entry_point_value_is_a_clear_error(plugin_site: Path) -> None:
    out = run_python(
        plugin_site,
        """
        from mmrl_harness.registry import architectures
        architectures.load("malformed_arch")
    """,
    )
    assert out.returncode != 0
    assert "malformed entry point malformed_arch = 'throwaway_good'" in out.stderr
    assert "expected 'package.module:attribute'" in out.stderr


def test_disable_env_hides_a_plugin(plugin_site: Path) -> None:
    out = run_python(
        plugin_site,
        """
        from mmrl_harness.registry import architectures
        print(architectures.names())
    """,
        MMRL_DISABLE_PLUGINS="architectures:broken_arch,malformed_arch",
    )
    assert out.returncode == 0, out.stderr
    assert "broken_arch" not in out.stdout and "malformed_arch" not in out.stdout
    assert "good_arch" in out.stdout


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(
        UnknownPluginError, match=r"unknown architectures plugin 'lava'\. Did you mean 'llava'\?"
    ):
        get_registry("architectures").load("lava")


def test_unknown_kind_suggests_the_closest() -> None:
    with pytest.raises(UnknownPluginError, match="Did you mean 'fusion'"):
        get_registry("fusoin")


def test_in_process_registration_checks_the_api_version() -> None:
    class Thing:
        plugin_api_version = PLUGIN_API_VERSION

    class OldThing:
        plugin_api_version = 0

    registry: Registry[object] = Registry("fusion")
    registry.register("thing", Thing)
    assert registry.load("thing") is Thing
    assert registry.infos()["thing"].distribution == "<local>"
    with pytest.raises(PluginValidationError, match="targets plugin API 0"):
        registry.register("old", OldThing)


def test_architecture_plugin_of_the_wrong_type_is_rejected() -> None:
    from mmrl_harness.models.anatomy import validate_plugin
    from mmrl_harness.registry import PluginInfo

    with pytest.raises(
        PluginValidationError, match=r"must be an mmrl_harness\.models\.anatomy\.Anatomy"
    ):
        validate_plugin(object(), PluginInfo("x", "architectures", "m:x", "dist", "1"))


def test_public_api_resolves_lazily() -> None:
    import mmrl_harness

    for name in mmrl_harness.__all__:
        assert getattr(mmrl_harness, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = mmrl_harness.nope


def test_entry_points_are_read_once_and_reset_rereads_them(plugin_site: Path) -> None:
    # Listing reads the installed entry points once for every kind (a cache); a plugin installed
    # afterwards shows up only after reset(), as documented.
    out = run_python(
        plugin_site,
        """
        import os, sys
        site = os.environ["PYTHONPATH"]
        sys.path.remove(site)
        from mmrl_harness import registry
        before = registry.get_registry("architectures").names()
        sys.path.insert(0, site)
        cached = registry.get_registry("architectures").names()
        registry.reset()
        after = registry.get_registry("architectures").names()
        versions = registry.plugin_versions()
        print("BEFORE", "good_arch" in before, "CACHED", "good_arch" in cached,
              "AFTER", "good_arch" in after, versions.get("mmrl-throwaway-plugins"))
        """,
    )
    assert out.returncode == 0, out.stderr
    assert "BEFORE False CACHED False AFTER True 0.3.1" in out.stdout
