"""Results files verify: every kind of edit is caught and named; `mmrl verify` reports it."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mmrl_harness.evaluate import evaluate, resolve_task
from mmrl_harness.metrics import compute_task_metrics
from mmrl_harness.results import (
    EvalResults,
    ResultsVerificationError,
    document_digest,
    load_results,
    records_digest,
    write_results,
)
from mmrl_harness.verify import verify_file

if TYPE_CHECKING:
    from mmrl_harness.models.loading import LoadedVLM

Raw = dict[str, Any]
#: 32-px frames (and short episodes for the multi-turn task) keep the tiny model fast.
SMALL = {"env_kwargs.image_size": 32}
SHORT = {**SMALL, "max_steps": 4}
EPISODES = 6


@pytest.fixture(scope="module")
def pristine(tiny_llava: LoadedVLM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results file written by the real evaluation path (sampled, so returns vary)."""
    path = tmp_path_factory.mktemp("verify") / "results.json"
    evaluate(
        tiny_llava,
        [resolve_task("numberline", SHORT), resolve_task("color_shape", SMALL)],
        episodes=EPISODES,
        batch_size=3,
        policy_mode="action_logits",
        do_sample=True,
        output=path,
    )
    return path


def tampered(pristine: Path, tmp_path: Path, edit: Callable[[Raw], None], rehash: bool) -> Path:
    """A copy of the pristine file with ``edit`` applied; ``rehash`` recomputes both hashes,
    as someone who knows the format would."""
    raw = copy.deepcopy(json.loads(pristine.read_text()))
    edit(raw)
    if rehash:
        results = EvalResults.model_validate(raw)
        results.records_sha256 = raw["records_sha256"] = records_digest(results.tasks)
        raw["document_sha256"] = document_digest(results)  # covers records_sha256 too
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


def fields(path: Path) -> list[str]:
    return [p.field for p in verify_file(path)]


def mmrl_verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmrl_harness", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_untouched_file_verifies(pristine: Path) -> None:
    assert verify_file(pristine) == []
    results = load_results(pristine)
    assert results.schema_version == "1.2" and results.document_sha256
    done = mmrl_verify(pristine)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"ok  {pristine}\n"


@pytest.mark.parametrize("rehash", [False, True])
def test_an_edited_metric_is_caught(pristine: Path, tmp_path: Path, rehash: bool) -> None:
    def edit(raw: Raw) -> None:
        metric = raw["tasks"]["numberline"]["metrics"]["success_rate"]
        metric["value"] = 0.0 if metric["value"] == 1.0 else 1.0

    found = fields(tampered(pristine, tmp_path, edit, rehash))
    hashes = [] if rehash else ["document_sha256"]
    assert found == ["tasks.numberline.metrics.success_rate.value", *hashes]


def test_cut_records_are_caught(pristine: Path, tmp_path: Path) -> None:
    def edit(raw: Raw) -> None:
        task = raw["tasks"]["color_shape"]
        task["records"] = task["records"][:2]

    path = tampered(pristine, tmp_path, edit, rehash=True)
    problems = {p.field: p.message for p in verify_file(path)}
    assert problems["tasks.color_shape.num_episodes"] == (
        f"says {EPISODES} but the file holds 2 records"
    )
    assert "cost.tokens_generated" in problems or "cost.episodes_per_s" in problems
    assert "records_sha256" not in problems and "document_sha256" not in problems


def test_a_duplicated_record_is_caught(pristine: Path, tmp_path: Path) -> None:
    def edit(raw: Raw) -> None:
        records = raw["tasks"]["numberline"]["records"]
        records.append(copy.deepcopy(records[0]))
        raw["tasks"]["numberline"]["num_episodes"] += 1

    found = fields(tampered(pristine, tmp_path, edit, rehash=True))
    assert f"tasks.numberline.records[{EPISODES}].episode_index" in found
    assert "cost.episodes_per_s" in found  # one more episode in the same wall time


def test_an_edited_reward_with_hashes_recomputed_fails_on_the_metrics(
    pristine: Path, tmp_path: Path
) -> None:
    def edit(raw: Raw) -> None:
        record = raw["tasks"]["numberline"]["records"][0]
        record["rewards"][-1] += 1.0
        record["episode_return"] = float(sum(record["rewards"]))  # consistent with the rewards

    found = fields(tampered(pristine, tmp_path, edit, rehash=True))
    # The mean return moves by 1 / EPISODES; nothing else about the record is inconsistent.
    assert "tasks.numberline.metrics.episode_return.value" in found
    assert not any(f.startswith("tasks.numberline.records") for f in found)
    assert "records_sha256" not in found and "document_sha256" not in found


def test_an_edited_record_without_rehash_fails_on_both_hashes(
    pristine: Path, tmp_path: Path
) -> None:
    def edit(raw: Raw) -> None:
        raw["tasks"]["color_shape"]["records"][1]["responses"][0] = "something else"

    # A response feeds no metric: only the hashes can tell.
    assert fields(tampered(pristine, tmp_path, edit, rehash=False)) == [
        "records_sha256",
        "document_sha256",
    ]


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("provenance", "git_sha", "0" * 40), ("config", "batch_size", 64), ("cost", "wall_time_s", 0)],
)
def test_an_edited_field_outside_the_records_breaks_the_document_hash(
    pristine: Path, tmp_path: Path, section: str, key: str, value: Any
) -> None:
    def edit(raw: Raw) -> None:
        raw[section][key] = value

    found = fields(tampered(pristine, tmp_path, edit, rehash=False))
    assert found[-1] == "document_sha256"
    # A zero wall time also contradicts the stored episodes/s and tokens/s; the others only the
    # hash sees.
    rates = ["cost.episodes_per_s", "cost.tokens_per_s"]
    assert found[:-1] == (rates if key == "wall_time_s" else [])


def test_an_edited_model_name_fails_via_the_cli(pristine: Path, tmp_path: Path) -> None:
    def edit(raw: Raw) -> None:
        raw["provenance"]["model"]["name_or_path"] = "llava-hf/llava-1.5-7b-hf"

    path = tampered(pristine, tmp_path, edit, rehash=False)
    done = mmrl_verify(pristine, path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"ok  {pristine}",
        f"{path}: document_sha256: does not match the document (it was edited after the run)",
    ]


@pytest.mark.parametrize(("metrics_seed", "stored_seed"), [(7, 7), (7, 0)])
def test_intervals_are_recomputed_with_the_stored_bootstrap_seed(
    pristine: Path, tmp_path: Path, metrics_seed: int, stored_seed: int
) -> None:
    def edit(raw: Raw) -> None:
        task = raw["tasks"]["numberline"]
        # Distinct returns, so resampled means take many values and the seed shows in the CIs.
        for i, record in enumerate(task["records"]):
            record["rewards"][0] += 0.1 * (i + 1) ** 2
            record["episode_return"] = float(sum(record["rewards"]))
        records = EvalResults.model_validate(raw).tasks["numberline"].records
        metrics = compute_task_metrics(records, seed=metrics_seed, sampled=True)  # do_sample
        task["metrics"] = {name: m.model_dump(mode="json") for name, m in metrics.items()}
        raw["bootstrap"]["seed"] = stored_seed

    found = fields(tampered(pristine, tmp_path, edit, rehash=True))
    if metrics_seed == stored_seed:
        assert found == []
    else:
        assert found and all(
            f.startswith("tasks.numberline.metrics.") and f.endswith((".ci_low", ".ci_high"))
            for f in found
        )


@pytest.mark.parametrize("version", ["2.0", "1.9", "one"])
def test_an_unknown_schema_version_is_refused(pristine: Path, tmp_path: Path, version: str) -> None:
    def edit(raw: Raw) -> None:
        raw["schema_version"] = version

    assert fields(tampered(pristine, tmp_path, edit, rehash=False)) == ["schema_version"]


def test_a_file_of_schema_1_0_is_checked_without_the_document_hash(
    pristine: Path, tmp_path: Path
) -> None:
    def edit(raw: Raw) -> None:
        raw["schema_version"] = "1.0"  # 1.0 had neither field; its bootstrap was seed 0, 2000
        del raw["document_sha256"], raw["bootstrap"]

    assert fields(tampered(pristine, tmp_path, edit, rehash=False)) == []


def test_a_stripped_document_hash_is_caught(pristine: Path, tmp_path: Path) -> None:
    def edit(raw: Raw) -> None:
        del raw["document_sha256"]

    assert fields(tampered(pristine, tmp_path, edit, rehash=False)) == ["document_sha256"]


def test_a_truncated_file_is_one_line_and_exit_1(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    text = pristine.read_text()
    path.write_text(text[: len(text) // 2])
    missing = tmp_path / "missing.json"
    done = mmrl_verify(path, missing)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "Traceback" not in done.stdout + done.stderr
    assert lines[0].startswith(f"{path}: (file): is not valid JSON")
    assert lines[1] == f"{missing}: (file): does not exist"


def test_a_wrongly_typed_field_is_named(pristine: Path, tmp_path: Path) -> None:
    def edit(raw: Raw) -> None:
        raw["tasks"]["numberline"]["records"][2]["seed"] = "three"

    assert fields(tampered(pristine, tmp_path, edit, rehash=False)) == [
        "tasks.numberline.records[2].seed"
    ]


def test_load_results_refuses_a_file_that_does_not_verify(pristine: Path, tmp_path: Path) -> None:
    def edit(raw: Raw) -> None:
        raw["tasks"]["numberline"]["metrics"]["episode_length"]["value"] += 1.0

    path = tampered(pristine, tmp_path, edit, rehash=True)
    with pytest.raises(ResultsVerificationError, match="does not verify") as caught:
        load_results(path)
    assert [p.field for p in caught.value.problems] == [
        "tasks.numberline.metrics.episode_length.value"
    ]
    assert load_results(path, verify=False).tasks["numberline"].num_episodes == EPISODES


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_files_get_the_umask_mode(
    pristine: Path, tmp_path: Path, umask: int, mode: int
) -> None:
    results = load_results(pristine)
    previous = os.umask(umask)
    try:
        path = write_results(results, tmp_path / "out" / "results.json")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode  # 0o666 & ~umask
    assert os.listdir(path.parent) == ["results.json"]  # the temporary file was renamed
    assert verify_file(path) == []
