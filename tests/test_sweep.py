"""``mmrl sweep``: a 2 adapters x 2 seeds sweep (plus one cell that fails at build time) on the
tiny LLaVA, run for real on CPU, then resumed, listed, and rerun through Ray.

Every cell is one GRPO step on color_shape and an 8-episode evaluation of the saved checkpoint,
so the whole file costs a minute or two of CPU, most of it Ray starting its workers.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from mmrl_harness.cli import app
from mmrl_harness.experiments.executors import RayMissingError
from mmrl_harness.experiments.spec import SweepError, SweepFileError, expand, load_sweep
from mmrl_harness.experiments.sweep import SWEEP_FILE, plan_sweep, run_sweep
from mmrl_harness.results import load_results
from mmrl_harness.verify import verify_file

BASE = Path(__file__).resolve().parents[1] / "examples" / "grpo_color_tiny.yaml"
TINY = {
    "max_steps": 1,
    "save_steps": 1,
    "per_device_batch_size": 16,  # 2 prompts x 8 completions
    "eval.episodes": 8,
}
# cross_attention validates layer indices only when it meets the decoder (2 layers in the tiny
# model), so this cell passes every check before loading and fails while the policy is built.
BAD_LAYERS = {"name": "cross_attention", "options": {"layers": [99]}}


def _sweep_file(folder: Path, out: Path, **extra: Any) -> Path:
    spec = {
        "base": str(BASE),
        "overrides": TINY,
        "output_dir": str(out),
        "grid": {"fusions": ["concat", "weighted_sum"], "seeds": [0, 1]},
        "cells": [{"fusion": BAD_LAYERS, "seed": 0}],
        **extra,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The sweep run once with the local executor (one cell after another, one thread each)."""
    folder = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    plan = run_sweep(_sweep_file(folder, folder / "out"), console=Console(file=io.StringIO()))
    assert torch.get_num_threads() == threads  # each cell ran with 1 thread, then restored it
    return folder, plan


def _aggregate(out: Path) -> dict[str, Any]:
    return json.loads((out / SWEEP_FILE).read_text())


def _episodes(results_path: Path) -> list[dict[str, Any]]:
    """Every episode record of a results file, without its wall time (timing, not behaviour)."""
    results = load_results(results_path)
    return [
        r.model_dump(exclude={"wall_time_s"}) for t in results.tasks.values() for r in t.records
    ]


def test_sweep_runs_every_cell_and_records_the_one_that_fails(local_sweep: Any) -> None:
    folder, _ = local_sweep
    out = folder / "out"
    data = _aggregate(out)
    assert data["counts"] == {"done": 4, "failed": 1, "pending": 0}
    done = [c for c in data["cells"] if c["status"] == "done"]
    assert sorted((c["factors"]["fusion"], c["factors"]["seed"]) for c in done) == [
        ("concat", 0), ("concat", 1), ("weighted_sum", 0), ("weighted_sum", 1),
    ]  # fmt: skip
    for cell in done:
        assert cell["id"].startswith(f"tiny-llava__{cell['factors']['fusion']}__color_shape__grpo")
        assert verify_file(out / cell["results"]) == []
        results = load_results(out / cell["results"])
        # The evaluation is of the saved checkpoint, which restored the cell's adapter.
        assert results.provenance.fusion.name == cell["factors"]["fusion"]
        assert results.provenance.fusion.checkpoint is not None
        assert cell["wall_time_s"] > 0 and cell["cpu_time_s"] > 0
        assert results.tasks["color_shape"].num_episodes == 8
    (failed,) = [c for c in data["cells"] if c["status"] == "failed"]
    assert failed["factors"]["fusion"] == "cross_attention"
    assert failed["error"]["type"].endswith("FusionOptionsError")
    assert "layer index 99 is out of range" in failed["error"]["message"]
    assert failed["results"] is None
    assert "FusionOptionsError" in (out / "cells" / failed["id"] / "error.txt").read_text()


def test_rerun_skips_finished_cells_and_retries_the_failed_one(local_sweep: Any) -> None:
    folder, _ = local_sweep
    out = folder / "out"
    before = _aggregate(out)
    done_ids = [c["id"] for c in before["cells"] if c["status"] == "done"]
    # Every file a training or an evaluation would write, with its modification time.
    stamps = {p: p.stat().st_mtime_ns for i in done_ids for p in (out / "cells" / i).rglob("*")}
    # --jobs 2: the one cell left runs in a spawned worker process, and fails there again.
    result = CliRunner().invoke(app, ["sweep", str(folder / "sweep.yaml"), "--jobs", "2"])
    assert result.exit_code == 1, result.output
    after = _aggregate(out)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing trained or rewritten
    assert sorted(p for i in done_ids for p in (out / "cells" / i).rglob("*")) == sorted(stamps)
    for old, new in zip(before["cells"], after["cells"], strict=True):
        if old["status"] == "done":
            assert new == old  # the record of the first run, wall time and all
        else:
            assert (new["status"], new["error"]) == ("failed", old["error"])
            assert new["finished_at"] > old["finished_at"]  # it ran again


def test_dry_run_lists_the_cells_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = _sweep_file(tmp_path, out)
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for fusion in ("concat", "weighted_sum", "cross_attention"):
        assert f"tiny-llava__{fusion}__color_shape__grpo__s0__" in result.output
    assert result.output.count("to run") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_cell_ids_are_stable_and_change_with_the_resolved_config(tmp_path: Path) -> None:
    sweep = _sweep_file(tmp_path, tmp_path / "out")
    ids = [c.id for c in expand(load_sweep(sweep), sweep)]
    assert ids == [c.id for c in expand(load_sweep(sweep), sweep, tmp_path / "elsewhere")]
    assert len(set(ids)) == 5
    other = _sweep_file(tmp_path, tmp_path / "out", overrides={**TINY, "learning_rate": 0.01})
    changed = [c.id for c in expand(load_sweep(other), other)]
    assert [i.rsplit("__", 1)[0] for i in changed] == [i.rsplit("__", 1)[0] for i in ids]
    assert not set(changed) & set(ids)  # same factors, another config: another hash


def test_sweep_file_errors_name_the_field_and_the_cell(tmp_path: Path) -> None:
    bad_key = _sweep_file(tmp_path, tmp_path / "out", grid={"fusion": ["concat"]})
    with pytest.raises(SweepFileError, match=r"grid\.fusion: unknown field"):
        load_sweep(bad_key)
    bad_name = _sweep_file(tmp_path, tmp_path / "out", grid={"fusions": ["concatt"]})
    with pytest.raises(SweepError, match=r"cell tiny-llava__concatt__.*concatt"):
        plan_sweep(bad_name)
    assert not (tmp_path / "out").exists()


def test_ray_executor_without_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is absent
    sweep = _sweep_file(tmp_path, tmp_path / "out")
    with pytest.raises(RayMissingError, match=re.escape("pip install 'mmrl-harness[ray]'")):
        run_sweep(sweep, executor="ray")
    assert not (tmp_path / "out").exists()


def test_ray_executor_gives_the_same_records(local_sweep: Any, tmp_path: Path) -> None:
    import ray  # a dev dependency: missing, this test fails rather than skips

    folder, _ = local_sweep
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        plan = run_sweep(folder / "sweep.yaml", output_dir=tmp_path, executor="ray")
    finally:
        ray.shutdown()
    local, remote = _aggregate(folder / "out"), _aggregate(tmp_path)
    assert remote["counts"] == local["counts"]
    assert [c.id for c in plan.cells] == [c["id"] for c in local["cells"]]
    for a, b in zip(local["cells"], remote["cells"], strict=True):
        assert (a["id"], a["status"], a["error"]) == (b["id"], b["status"], b["error"])
        if a["status"] == "done":
            # Same config, seeds and thread count: the same training, bit for bit, so the same
            # episodes exactly (actions, responses, rewards, tokens).
            assert _episodes(folder / "out" / a["results"]) == _episodes(tmp_path / b["results"])
