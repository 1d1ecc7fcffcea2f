"""Training infrastructure: config validation, checkpoints and resume, reward failures, and
data-parallel runs under ``accelerate launch`` (real subprocesses, real SIGKILL)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmrl_harness.train import TrainConfigError, load_train_config, train_config_from_dict
from mmrl_harness.train.checkpoints import last_checkpoint, prune_incomplete

REPO = Path(__file__).resolve().parents[1]

SMALL_RUN: dict[str, Any] = {
    "model": "tiny-llava",
    "task": "color_shape",
    "task_overrides": {
        "env_kwargs.image_size": 32,
        "env_kwargs.question": "color",
        "env_kwargs.colors": ["red", "green"],
    },
    "max_steps": 4,
    "learning_rate": 1e-3,
    "per_device_batch_size": 8,
    "num_generations": 4,
    "max_new_tokens": 1,
    "save_steps": 2,
    "logging_steps": 1,
    "eval": {"episodes": 8},
}


def _write_config(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump({**SMALL_RUN, **fields}), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    # One torch thread per process: the test machine has two cores shared with other work.
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


# -- config ----------------------------------------------------------------------------------
def test_config_error_names_the_file_the_field_and_the_expected_form(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "bad.yaml", max_steps=0, lora={"rank": 4})
    with pytest.raises(TrainConfigError) as err:
        load_train_config(path)
    assert sorted(err.value.fields) == ["lora.rank", "max_steps"]
    message = str(err.value)
    assert str(path) in message
    assert "optimizer steps to train for" in message  # the field's description
    assert "one of: r, alpha" in message


def test_missing_task_and_unknown_algorithm_are_named() -> None:
    with pytest.raises(TrainConfigError) as err:
        train_config_from_dict({"algorithm": "dqn"})
    assert sorted(err.value.fields) == ["algorithm", "task"]


def test_episodic_options_are_refused_for_grpo() -> None:
    with pytest.raises(TrainConfigError) as err:
        train_config_from_dict({"task": "color_shape", "episodic": {"gamma": 0.9}})
    assert err.value.fields == ["episodic"]


def test_overrides_replace_dotted_fields_and_task_override_keys(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "run.yaml")
    config = load_train_config(
        path,
        {"lora.r": 4, "grpo.beta": 0.04, "task_overrides.env_kwargs.image_size": 48},
    )
    assert config.lora.r == 4
    assert config.grpo == {"beta": 0.04}
    assert config.task_overrides["env_kwargs.image_size"] == 48
    assert config.task_overrides["env_kwargs.question"] == "color"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("task: color_shape\nlora: [r: 4\n", encoding="utf-8")
    with pytest.raises(TrainConfigError, match=r"line \d+, column \d+"):
        load_train_config(path)


# -- checkpoints -----------------------------------------------------------------------------
def test_resume_deletes_half_written_checkpoints_and_skips_them(tmp_path: Path) -> None:
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / ".tmp-checkpoint-8").mkdir()
    (tmp_path / "incomplete-checkpoint-3").mkdir()  # set aside by an older harness
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    removed = prune_incomplete(tmp_path)
    assert sorted(p.name for p in removed) == [
        ".tmp-checkpoint-8",
        "checkpoint-6",
        "incomplete-checkpoint-3",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4"]


def _checkpoint_is_intact(checkpoint: Path) -> None:
    import torch
    from safetensors.torch import load_file

    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == int(checkpoint.name.split("-")[1])
    weights = load_file(checkpoint / "adapter_model.safetensors")
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=False)
    assert optimizer["state"]


# -- reward failures -------------------------------------------------------------------------
def _train_in_process(tmp_path: Path, **fields: Any) -> Any:
    import torch

    from mmrl_harness.train import train

    torch.set_num_threads(1)
    return train(train_config_from_dict({**SMALL_RUN, "output_dir": str(tmp_path), **fields}))


def test_nan_reward_stops_with_the_episode_named_and_the_checkpoint_intact(
    tmp_path: Path,
) -> None:
    import gymnasium

    from mmrl_harness.envs.shapes import ColorShapeEnv
    from mmrl_harness.train import RewardError

    marker = tmp_path / "run" / "checkpoint-2" / "manifest.json"

    class NanScorer(ColorShapeEnv):
        # A reward that turns NaN once checkpoint-2 is written (resume refuses a changed task).
        def step(self, action: Any) -> Any:
            observation, reward, terminated, truncated, info = super().step(action)
            return observation, math.nan if marker.exists() else reward, terminated, truncated, info

    gymnasium.register("mmrl_test/NanScorer-v0", entry_point=NanScorer)
    # Invalid answers (most, from an untrained model) play the fallback action, so every
    # completion reaches the env's step.
    fallback = {"policy": "repeat_last", "fallback_action": "red"}
    task_file = _single_turn_task(
        tmp_path, "nan_scorer", "mmrl_test/NanScorer-v0", invalid_action=fallback
    )
    with pytest.raises(RewardError) as err:
        _train_in_process(tmp_path / "run", task=str(task_file), task_overrides={})
    message = str(err.value)
    assert "the reward is nan" in message
    assert "task 'nan_scorer'" in message and "seed " in message and "completion " in message
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-2"]
    _checkpoint_is_intact(tmp_path / "run" / "checkpoint-2")


def _single_turn_task(tmp_path: Path, name: str, env: str, **fields: Any) -> Path:
    task_file = tmp_path / f"{name}.yaml"
    task_file.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "kind": "single_turn",
                "env": env,
                "env_kwargs": {"image_size": 32, "question": "color", "colors": ["red", "green"]},
                "prompt": "{text}",
                **fields,
            }
        )
    )
    return task_file


def test_raising_reward_stops_with_the_episode_named_and_the_checkpoint_intact(
    tmp_path: Path,
) -> None:
    import gymnasium

    from mmrl_harness.envs.shapes import ColorShapeEnv
    from mmrl_harness.train import RewardError

    marker = tmp_path / "run" / "checkpoint-2" / "trainer_state.json"

    class BrokenScorer(ColorShapeEnv):
        # reset, not step: the env is only stepped for valid answers, reset for every one.
        def reset(self, *args: Any, **kwargs: Any) -> Any:
            if marker.exists():
                raise ZeroDivisionError("scorer crashed")
            return super().reset(*args, **kwargs)

    gymnasium.register("mmrl_test/BrokenScorer-v0", entry_point=BrokenScorer)
    task_file = _single_turn_task(tmp_path, "broken_scorer", "mmrl_test/BrokenScorer-v0")
    with pytest.raises(RewardError) as err:
        _train_in_process(tmp_path / "run", task=str(task_file), task_overrides={})
    message = str(err.value)
    assert "task 'broken_scorer'" in message and "ZeroDivisionError: scorer crashed" in message
    assert "seed " in message and "completion " in message
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-2"]
    _checkpoint_is_intact(tmp_path / "run" / "checkpoint-2")


# -- processes -------------------------------------------------------------------------------
def test_two_cpu_processes_over_gloo_both_train(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "run.yaml", output_dir=str(tmp_path / "out"), max_steps=2)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "accelerate_configs" / "cpu.yaml"),
        "-m", "mmrl_harness", "train", str(config),
    ]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "ranks").iterdir())]
    assert [(r["rank"], r["world_size"], r["global_step"]) for r in ranks] == [(0, 2, 2), (1, 2, 2)]
    assert (tmp_path / "out" / "results.json").is_file()  # written by the main process only
    assert done.stdout.count("results written to") == 1


def test_killed_run_resumes_to_the_same_step_count_with_the_optimizer_state_continuing(
    tmp_path: Path,
) -> None:
    import torch

    out = tmp_path / "out"
    config = _write_config(
        tmp_path / "run.yaml",
        output_dir=str(out),
        max_steps=6,
        save_steps=3,
        eval={"enabled": False},
    )
    command = [sys.executable, "-m", "mmrl_harness", "train", str(config)]
    # A real SIGKILL at a fixed point (the harness's fault hook): after step 5 is trained and
    # logged, so checkpoint-3 is the last one on disk and steps 4-5 are lost.
    killed = subprocess.run(
        command, env={**_env(), "MMRL_FAULT_AT": "after-update:5"}, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    killed_at = last_checkpoint(out)
    assert killed_at is not None and killed_at.name == "checkpoint-3"
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "ranks" / "rank-0.json").read_text())
    assert summary["global_step"] == 6
    assert summary["resumed_from"] == str(killed_at)
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # Adam's step counter counts every step since the start: the killed run's optimizer state
    # was loaded and continued, not re-initialised at the resume point.
    optimizer = torch.load(out / "checkpoint-6" / "optimizer.pt", weights_only=False)
    steps = {int(s["step"]) for s in optimizer["state"].values()}
    assert steps == {6}


def test_shipped_examples_and_accelerate_configs_are_valid() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    from mmrl_harness.experiments.spec import expand, load_sweep

    examples = sorted((REPO / "examples").glob("*.yaml"))
    sweeps = [path for path in examples if path.stem.startswith("study_")]
    assert sweeps and len(sweeps) < len(examples)
    for path in examples:
        if path in sweeps:  # a sweep file: every cell must expand to a valid training config
            assert expand(load_sweep(path), path)
        else:
            load_train_config(path)
    kinds = {
        path.stem: load_config_from_file(str(path)).distributed_type.value
        for path in (REPO / "accelerate_configs").glob("*.yaml")
    }
    assert kinds == {
        "cpu": "MULTI_GPU",  # the launch that really starts 2 CPU processes (docs/training.md)
        "single_gpu": "NO",
        "multi_gpu": "MULTI_GPU",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
        "fsdp": "FSDP",
    }


def test_cli_reports_a_bad_config_as_one_error_naming_the_field(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmrl_harness.cli import app

    path = _write_config(tmp_path / "run.yaml")
    result = CliRunner().invoke(app, ["train", str(path), "--override", "learning_rate=-1"])
    assert result.exit_code == 1
    assert "learning_rate" in result.output and "greater than 0" in result.output


def test_training_docs_list_exactly_the_config_fields() -> None:
    """docs/training.md's config reference has one row per TrainConfig field (nested ones as
    ``parent.field``) and no row for a field that does not exist."""
    from pydantic import BaseModel

    from mmrl_harness.train.config import TrainConfig

    docs = (Path(__file__).parent.parent / "docs" / "training.md").read_text()
    reference = docs.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    documented = {line.split("`")[1] for line in reference.splitlines() if line.startswith("| `")}
    expected = set(TrainConfig.model_fields)
    for name, field in TrainConfig.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            expected |= {f"{name}.{sub}" for sub in kind.model_fields}
    assert documented == expected
