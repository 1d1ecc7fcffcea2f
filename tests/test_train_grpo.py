"""GRPO through TRL on single-turn tasks: the dataset, the task reward, and learning itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mmrl_harness.evaluate import resolve_task  # noqa: E402
from mmrl_harness.train import (  # noqa: E402
    TrainConfigError,
    build_policy,
    train,
    train_config_from_dict,
)
from mmrl_harness.train.algorithms.grpo_trainer import (  # noqa: E402
    TaskReward,
    build_grpo_dataset,
    grpo_arguments,
)

COLOR_TASK = {
    "env_kwargs.image_size": 32,
    "env_kwargs.question": "color",
    "env_kwargs.colors": ["red", "green"],
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # Two cores shared with other processes: one torch thread avoids oversubscription stalls.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _config(tmp_path: Path, **fields: Any) -> Any:
    base: dict[str, Any] = {
        "model": "tiny-llava",
        # Random end to end, like examples/grpo_color_tiny.yaml: the vision tower must learn too.
        "lora": {"target_modules": "all-linear"},
        "task": "color_shape",
        "task_overrides": COLOR_TASK,
        "output_dir": str(tmp_path / "run"),
        "max_steps": 2,
        "learning_rate": 1e-3,
        "per_device_batch_size": 16,
        "num_generations": 8,
        "max_new_tokens": 1,
        "save_steps": 100,
        "logging_steps": 1,
        "eval": {"episodes": 16},
    }
    base.update(fields)
    return train_config_from_dict(base)


def test_dataset_rows_hold_the_conversation_the_frame_and_the_seed(tiny_llava: Any) -> None:
    from mmrl_harness.models.generation import user_turn
    from mmrl_harness.tasks import make_task_env

    task = resolve_task("color_shape", COLOR_TASK)
    dataset = build_grpo_dataset(task, [3, 4, 5])
    assert dataset.column_names == ["prompt", "image", "seed"]
    env = make_task_env(task)
    observation = env.reset(seed=4)
    row = dataset[1]
    assert row["seed"] == 4
    # The very prompt build_inputs renders at evaluation: image first, then the question.
    render = tiny_llava.processor.apply_chat_template
    assert render(row["prompt"], add_generation_prompt=True, tokenize=False) == render(
        user_turn(observation.text), add_generation_prompt=True, tokenize=False
    )
    assert row["image"].size == (32, 32)
    assert list(row["image"].getdata()) == list(observation.to_pil().getdata())


def test_task_reward_is_the_task_envs_reward_for_each_completion() -> None:
    from mmrl_harness.tasks import make_task_env

    task = resolve_task("color_shape", COLOR_TASK)
    env = make_task_env(task)
    env.reset(seed=7)
    right = env.oracle()
    assert right is not None
    wrong = "green" if right == "red" else "red"
    reward = TaskReward(task)
    logged: dict[str, float] = {}
    completions = [[{"role": "assistant", "content": t}] for t in (right, wrong, "banana")]
    scores = reward(completions, seed=[7, 7, 7], log_metric=logged.__setitem__)
    assert scores == [1.0, 0.0, 0.0]
    assert logged == {"success": pytest.approx(1 / 3), "invalid_action_rate": pytest.approx(1 / 3)}


def test_generation_never_samples_the_models_suppressed_tokens(tmp_path: Path) -> None:
    policy = build_policy(_config(tmp_path))
    args = grpo_arguments(_config(tmp_path), policy)
    suppressed = set(args.generation_kwargs["suppress_tokens"])
    model_config = policy.loaded.model.config
    assert set(policy.loaded.model.generation_config.suppress_tokens) <= suppressed
    assert model_config.image_token_id in suppressed


def test_unknown_grpo_argument_names_the_field_and_suggests_one(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError) as err:
        grpo_arguments(_config(tmp_path, grpo={"betta": 0.1}))
    assert err.value.fields == ["grpo.betta"]
    assert "did you mean 'beta'" in str(err.value)


def test_group_size_that_does_not_divide_the_batch_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError) as err:
        grpo_arguments(_config(tmp_path, per_device_batch_size=12, num_generations=8))
    assert err.value.fields == ["num_generations"]


def test_multi_turn_task_is_refused_with_the_algorithms_that_fit(tmp_path: Path) -> None:
    config = _config(tmp_path, task="numberline", task_overrides={})
    with pytest.raises(TrainConfigError, match="ppo or episodic_grpo"):
        train(config)


def test_grpo_raises_the_reward_and_writes_checkpoint_results_and_metrics(
    tmp_path: Path,
) -> None:
    # An invalid answer costs -1, a wrong colour 0, the right one +1: the random model answers
    # with an answer word ~12 % of the time, so a few steps already have reward variance.
    config = _config(
        tmp_path,
        task_overrides={**COLOR_TASK, "invalid_action.penalty": -1.0},
        max_steps=16,
        learning_rate=1e-2,
        per_device_batch_size=32,
        save_steps=16,
        fusion={"name": "weighted_sum"},
    )
    result = train(config)
    rewards = [value for _, value in result.metric_series("reward")]
    assert len(rewards) == 16
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert first < -0.5
    assert last > first + 0.3
    row = result.log_history[-2]  # the last step row (the final row is the run summary)
    for key in (
        "reward_std",
        "entropy",
        "step_time",
        "tokens_per_s",
        "peak_memory_mib",
        "success",
        "fusion/weighted_sum/image",
    ):
        assert key in row, key
    assert result.global_step == 16
    assert result.last_checkpoint == Path(config.output_dir) / "checkpoint-16"
    assert (Path(config.output_dir) / "adapter_model.safetensors").is_file()
    assert result.results_path is not None and result.results_path.is_file()
    assert result.results is not None
    assert result.results.provenance.fusion.name == "weighted_sum"
    assert result.results.provenance.fusion.checkpoint == str(result.last_checkpoint)


def test_quickstart_trains_and_reports_greedy_and_sampled_success_before_and_after(
    tmp_path: Path,
) -> None:
    from io import StringIO

    from rich.console import Console

    from mmrl_harness.quickstart import run_quickstart

    out = StringIO()
    scores = run_quickstart(console=Console(file=out, width=400), max_steps=3, boards_dir=tmp_path)
    assert set(scores) == {"greedy_before", "sampled_before", "greedy_after", "sampled_after"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    text = out.getvalue()
    assert "greedy" in text and "sampled" in text and "trained 3 steps" in text
    # It ends on the local board: one stored run and the rendered page, whose path it prints.
    assert len(list((tmp_path / "quickstart" / "submissions").glob("*.json"))) == 1
    assert (tmp_path / "quickstart" / "index.html").is_file() and "index.html" in text
