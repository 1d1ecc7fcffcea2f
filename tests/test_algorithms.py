"""Algorithms are plugins: registered by entry point, validated at config load, and a new one
is one module plus one registration (here a REINFORCE trained through ``train()``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from mmrl_harness.cli import app
from mmrl_harness.registry import PluginInfo, PluginValidationError, algorithms
from mmrl_harness.train import TrainConfigError, train_config_from_dict
from mmrl_harness.train.algorithms.base import validate_plugin
from mmrl_harness.train.episodic.algorithm import EpisodicAlgorithm
from mmrl_harness.train.episodic.rollout import collect_episodes

SHORT_LINE = {"env_kwargs.image_size": 32, "env_kwargs.line_length": 3, "max_steps": 4}


class Reinforce(EpisodicAlgorithm):
    """REINFORCE with a batch-mean baseline over whole episodes, on the shared episodic loop."""

    description = "REINFORCE with a batch-mean baseline"

    def collect(
        self,
        pool: Any,
        actor_critic: Any,
        loaded: Any,
        spec: Any,
        config: Any,
        opts: Any,
        seeds: Any,
        generator: Any,
    ) -> Any:
        return collect_episodes(
            pool,
            actor_critic,
            loaded,
            spec,
            group_size=1,
            seeds=seeds,
            seed_pool=config.train_seeds.seeds(),
            generator=generator,
        )

    def compute_advantages(self, rollout: Any, config: Any, opts: Any) -> None:
        returns = rollout.episode_returns
        rollout.advantages = (returns - returns.mean())[rollout.episode_ids]
        rollout.returns = returns[rollout.episode_ids]


@pytest.fixture
def reinforce() -> Iterator[None]:
    algorithms.register("reinforce", Reinforce)
    yield
    algorithms._local.pop("reinforce", None)


def test_the_built_in_algorithms_are_entry_points_listed_by_mmrl_plugins() -> None:
    assert {"grpo", "ppo", "episodic_grpo"} <= set(algorithms.names())
    assert algorithms.infos()["ppo"].distribution == "mmrl-harness"
    out = CliRunner().invoke(app, ["plugins", "--kind", "algorithms", "--load"])
    assert out.exit_code == 0, out.output
    for name in ("grpo", "ppo", "episodic_grpo"):
        assert name in out.output
    assert "failed" not in out.output


def test_a_misspelt_algorithm_fails_at_config_load_with_a_suggestion() -> None:
    with pytest.raises(TrainConfigError) as err:
        train_config_from_dict({"task": "numberline", "algorithm": "ppp"})
    assert err.value.fields == ["algorithm"]
    assert "did you mean 'ppo'?" in str(err.value)


def test_an_algorithms_options_block_is_validated_by_the_algorithm() -> None:
    with pytest.raises(TrainConfigError, match=r"episodic\.gamma"):
        train_config_from_dict({"task": "numberline", "algorithm": "ppo", "episodic": {"gamma": 2}})
    with pytest.raises(TrainConfigError) as err:
        train_config_from_dict({"task": "numberline", "algorithm": "ppo", "grpo": {"beta": 0.1}})
    assert err.value.fields == ["grpo"]


def test_validate_plugin_refuses_what_is_not_a_concrete_algorithm() -> None:
    info = PluginInfo("x", "algorithms", "m:x", "dist", "1")
    with pytest.raises(PluginValidationError, match="subclass of"):
        validate_plugin(object, info)
    with pytest.raises(PluginValidationError, match="does not implement"):
        validate_plugin(EpisodicAlgorithm, info)
    validate_plugin(Reinforce, info)


def test_a_third_algorithm_registered_in_process_trains_through_train(
    tmp_path: Path, reinforce: None
) -> None:
    from mmrl_harness.train import train

    torch.set_num_threads(1)
    config = train_config_from_dict(
        {
            "model": "tiny-llava",
            "task": "numberline",
            "task_overrides": SHORT_LINE,
            "algorithm": "reinforce",
            "output_dir": str(tmp_path / "run"),
            "learning_rate": 1e-3,
            "per_device_batch_size": 4,
            "max_steps": 2,
            "save_steps": 2,
            "episodic": {"ppo_epochs": 1, "num_minibatches": 2, "eval_every": 0},
            "eval": {"episodes": 4, "policy_mode": "action_logits"},
        }
    )
    result = train(config)
    assert result.algorithm == "reinforce"
    assert [h["step"] for h in result.log_history] == [1, 2]
    assert "value_loss" not in result.log_history[0]  # no critic: the default loss terms
    assert result.log_history[0]["episodes"] == 4  # collect_episodes: one per environment
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["algorithm"] == "reinforce" and state["update"] == 2
    assert result.results is not None and result.results.tasks["numberline"].num_episodes == 4
    # The policy moved: LoRA's B matrices start at zero and the update made them non-zero.
    assert result.policy is not None
    lora_b = [
        p
        for n, p in result.policy.peft_model.named_parameters()
        if "lora_B" in n and p.requires_grad
    ]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)


def test_a_checkpoint_of_another_algorithm_is_not_resumed(tmp_path: Path, reinforce: None) -> None:
    from mmrl_harness.train.episodic.checkpoint import CheckpointError
    from mmrl_harness.train.episodic.trainer import train_episodic
    from mmrl_harness.train.policy import build_policy

    data = {
        "model": "tiny-llava",
        "task": "numberline",
        "task_overrides": SHORT_LINE,
        "algorithm": "reinforce",
        "output_dir": str(tmp_path / "run"),
        "per_device_batch_size": 4,
        "max_steps": 1,
        "save_steps": 1,
        "episodic": {"ppo_epochs": 1, "num_minibatches": 2, "eval_every": 0},
    }
    torch.set_num_threads(1)
    config = train_config_from_dict(data)
    train_episodic(config, build_policy(config))
    again = train_config_from_dict(
        {**data, "algorithm": "episodic_grpo", "num_generations": 2, "max_steps": 2}
    )
    # The manifest's config names the algorithm that wrote the checkpoint.
    with pytest.raises(CheckpointError, match='algorithm: "reinforce" -> "episodic_grpo"'):
        train_episodic(again, build_policy(again))
