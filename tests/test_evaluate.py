"""Rollouts, evaluation and results files, with the tiny VLMs as real policies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from mmrl_harness.cli import app
from mmrl_harness.evaluate import evaluate, resolve_seeds, resolve_task
from mmrl_harness.metrics import compute_task_metrics, length_histogram
from mmrl_harness.results import (
    EvalResults,
    ResultsFileError,
    load_results,
    records_to_dataset,
)
from mmrl_harness.rollout import PolicyOutput, VLMPolicy, run_episodes
from mmrl_harness.tasks import make_task_env
from mmrl_harness.tasks.episode import Observation

if TYPE_CHECKING:
    from mmrl_harness.models.loading import LoadedVLM

#: 32-px frames for the tiny models.
SMALL = {"env_kwargs.image_size": 32}
#: ... and short episodes for multi-turn tasks, to keep the suite fast.
SHORT = {**SMALL, "max_steps": 4}


class AlwaysSay:
    """A scripted policy: the same word every turn, for every environment."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.batch_sizes: list[int] = []

    def act(
        self, observations: Sequence[Observation], action_words: Sequence[str]
    ) -> list[PolicyOutput]:
        self.batch_sizes.append(len(observations))
        return [PolicyOutput(self.word, 1) for _ in observations]


def without_time(records: list) -> list[dict]:
    return [r.model_dump(exclude={"wall_time_s"}) for r in records]


def test_scripted_policy_gets_the_rewards_the_task_defines() -> None:
    task = resolve_task("numberline", SMALL)
    records = run_episodes(
        lambda: make_task_env(task), AlwaysSay("right"), [1, 2, 3, 4], batch_size=4
    )
    assert [r.seed for r in records] == [1, 2, 3, 4]
    for record in records:
        assert record.length == len(record.rewards) == len(record.actions)
        assert record.episode_return == pytest.approx(sum(record.rewards))
        assert set(record.actions) == {"right"} and record.invalid_actions == 0
        # Always "right": success exactly when the target is right of the marker (+1 at the goal).
        if record.success:
            assert record.rewards[-1] == 1.0 and not record.truncated
        else:
            assert record.truncated and record.length == task.max_steps and -1.0 in record.rewards


def test_finished_slots_are_refilled_so_batches_stay_full() -> None:
    task = resolve_task("color_shape", SMALL)
    policy = AlwaysSay("red")
    records = run_episodes(lambda: make_task_env(task), policy, list(range(10)), batch_size=4)
    assert len(records) == 10
    assert policy.batch_sizes == [4, 4, 2]  # single-turn episodes: 10 = 4 + 4 + 2


def test_invalid_text_is_counted(tiny_llava: LoadedVLM) -> None:
    task = resolve_task("color_shape", SMALL)
    records = run_episodes(lambda: make_task_env(task), AlwaysSay("banana"), [0, 1], batch_size=2)
    assert [r.invalid_actions for r in records] == [1, 1]
    assert compute_task_metrics(records)["invalid_action_rate"].value == 1.0


@pytest.mark.parametrize("mode", ["generate", "action_logits"])
def test_batched_rollout_equals_one_episode_at_a_time(tiny_llava: LoadedVLM, mode: str) -> None:
    task = resolve_task("numberline", SHORT)
    policy = VLMPolicy(tiny_llava, mode=mode, max_new_tokens=2)  # type: ignore[arg-type]
    seeds = [5, 6, 7, 8, 9]
    batched = run_episodes(lambda: make_task_env(task), policy, seeds, batch_size=5)
    sequential = run_episodes(lambda: make_task_env(task), policy, seeds, batch_size=1)
    assert without_time(batched) == without_time(sequential)


@pytest.mark.parametrize("family", ["tiny_llava", "tiny_qwen"])
def test_action_scores_do_not_depend_on_left_padding(
    family: str, request: pytest.FixtureRequest
) -> None:
    import torch

    from mmrl_harness.models.generation import build_inputs

    # RoPE families are shift-invariant anyway; this guards families with absolute positions.
    loaded = request.getfixturevalue(family)
    policy = VLMPolicy(loaded, mode="action_logits")
    obs = make_task_env(resolve_task("numberline", SMALL)).reset(seed=0)
    prompts = [obs.text, "the marker is at 3 . the target is at 1 . " + obs.text]
    words = ("left", "right")
    alone = [
        policy.action_scores(build_inputs(loaded, [obs.to_pil()], [p]), words) for p in prompts
    ]
    together = policy.action_scores(build_inputs(loaded, [obs.to_pil()] * 2, prompts), words)
    # Batch of 2 vs 1 with left padding: the same sums in another order, equal to float32
    # rounding (~1e-6 on log-probabilities of order 1), checked with a 10x margin.
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_sampled_rollouts_are_deterministic_under_a_seed(tiny_qwen: LoadedVLM) -> None:
    task = resolve_task("numberline", SHORT)
    policy = VLMPolicy(tiny_qwen, mode="action_logits", do_sample=True, seed=3)
    first = run_episodes(lambda: make_task_env(task), policy, [1, 2, 3], batch_size=2)
    again = run_episodes(lambda: make_task_env(task), policy, [1, 2, 3], batch_size=2)
    assert without_time(first) == without_time(again)
    # Sampling really samples: over the episodes both actions occur.
    assert {a for r in first for a in r.actions} == {"left", "right"}


def test_action_logits_needs_action_words(tiny_llava: LoadedVLM) -> None:
    observation = make_task_env(resolve_task("counting", SMALL)).reset(seed=0)
    policy = VLMPolicy(tiny_llava, mode="action_logits")
    with pytest.raises(ValueError, match="needs a task with action words"):
        policy.act([observation], action_words=())
    with pytest.raises(ValueError, match="'zebra' is 1 token"):
        policy.act([observation], action_words=("left", "zebra"))


def test_results_file_validates_and_metrics_recompute_from_records(
    tiny_llava: LoadedVLM, tmp_path: Path
) -> None:
    path = tmp_path / "results.json"
    results = evaluate(
        tiny_llava,
        ["numberline", "color_shape"],
        episodes=6,
        batch_size=3,
        task_overrides=SMALL,
        max_new_tokens=2,
        output=path,
        policy_mode="generate",
        do_sample=True,
    )
    loaded = load_results(path)
    assert loaded == results
    EvalResults.model_validate(json.loads(path.read_text()))
    for name, task_result in loaded.tasks.items():
        assert task_result.num_episodes == 6
        # sampled: the file also holds the spread of returns across the sampled rollouts.
        recomputed = compute_task_metrics(task_result.records, sampled=True)
        assert recomputed == task_result.metrics, name
        assert length_histogram(task_result.records) == task_result.length_histogram
    provenance = loaded.provenance
    assert provenance.model.name_or_path == "tiny-llava"
    assert provenance.model.fingerprint and provenance.model.fingerprint.startswith("sha256:")
    assert provenance.plugins["mmrl-harness"] and provenance.libraries["torch"]
    assert provenance.seeds == resolve_seeds(resolve_task("numberline"), episodes=6)
    assert loaded.cost.tokens_generated == sum(
        r.tokens for t in loaded.tasks.values() for r in t.records
    )


def test_tampered_results_file_is_refused(tiny_llava: LoadedVLM, tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    evaluate(tiny_llava, ["color_shape"], episodes=3, task_overrides=SMALL, output=path)
    raw = json.loads(path.read_text())
    raw["tasks"]["color_shape"]["records"][0]["success"] = True
    raw["tasks"]["color_shape"]["records"][0]["episode_return"] = 1.0
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultsFileError, match="records were edited after the run"):
        load_results(path)
    raw["schema_version"] = "9.0"
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultsFileError, match=r"schema_version: '9\.0' is not a version"):
        load_results(path)
    path.write_text("{not json")
    with pytest.raises(ResultsFileError, match="not valid JSON"):
        load_results(path)


def test_records_export_as_a_datasets_parquet(tiny_llava: LoadedVLM, tmp_path: Path) -> None:
    results = evaluate(tiny_llava, ["numberline"], episodes=4, task_overrides=SHORT)
    records = results.tasks["numberline"].records
    dataset = records_to_dataset(records)
    dataset.to_parquet(tmp_path / "records.parquet")
    import datasets

    back = datasets.Dataset.from_parquet(str(tmp_path / "records.parquet"))
    assert back.num_rows == 4
    assert back["episode_return"] == [r.episode_return for r in records]
    assert back["actions"] == [r.actions for r in records]


def test_a_plain_gymnasium_env_wrapped_in_yaml_is_evaluated(
    tiny_qwen: LoadedVLM, tmp_path: Path
) -> None:
    path = tmp_path / "cliff.yaml"
    path.write_text(
        "name: cliff\nkind: multi_turn\nenv: CliffWalking-v1\nframe: render\nimage_size: 32\n"
        "prompt: go to the goal . what is your action ?\n"
        "actions: {up: 0, right: 1, down: 2, left: 3}\nmax_steps: 4\n"
        "success: {min_return: 0}\n"
    )
    results = evaluate(tiny_qwen, [str(path)], episodes=2, policy_mode="action_logits")
    result = results.tasks["cliff"]
    assert result.num_episodes == 2
    assert all(r.length == 4 and r.truncated for r in result.records)  # cannot reach the goal in 4
    assert all(set(r.actions) <= {"up", "right", "down", "left"} for r in result.records)


def test_resolve_seeds_extends_past_the_task_range() -> None:
    task = resolve_task("color_shape")
    seeds = task.eval_seeds.seeds()
    assert resolve_seeds(task, episodes=3) == seeds[:3]
    assert resolve_seeds(task, episodes=len(seeds) + 2)[-2:] == [max(seeds) + 1, max(seeds) + 2]
    assert resolve_seeds(task, seeds=[7, 8]) == [7, 8]
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        resolve_seeds(task, episodes=0)


def test_cli_eval_writes_a_results_file(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            "tiny-llava",
            "--task",
            "counting",
            "--episodes",
            "3",
            "--override",
            "env_kwargs.image_size=32",
            "--fusion",
            "weighted_sum",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "counting" in result.output and "results written to" in result.output
    loaded = load_results(out)
    assert loaded.provenance.fusion.name == "weighted_sum"
    assert loaded.tasks["counting"].num_episodes == 3


def test_cli_eval_unknown_task_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-llava", "--task", "countin"])
    assert result.exit_code == 1
    assert "Did you mean 'counting'" in result.output
    assert "Traceback" not in result.output
