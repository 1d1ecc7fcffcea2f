"""Checkpoints that know what they hold: exact resume after SIGKILL (every trainer), fallback from
a corrupt checkpoint, refused config changes, the output_dir lock, and ``mmrl eval`` restoring
the trained model and fusion adapter from a checkpoint's manifest.

Real tiny models, real subprocesses killed with a real SIGKILL at exact points (the
``MMRL_FAULT_AT`` hook in ``train/checkpoints.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mmrl_harness.train.checkpoints import CheckpointError, verify_checkpoint
from mmrl_harness.train.config import train_config_from_dict
from mmrl_harness.train.manifest import file_problems, read_manifest

SHORT_LINE = {"env_kwargs.image_size": 32, "env_kwargs.line_length": 3, "max_steps": 4}

# Episodes of 4 turns at most and rollouts of 3 turns: PPO's episodes run across updates, so an
# exact resume needs the episode boundary at each checkpoint.
EPISODIC_RUN: dict[str, Any] = {
    "model": "tiny-llava",
    "task": "numberline",
    "task_overrides": SHORT_LINE,
    "learning_rate": 1e-3,
    "per_device_batch_size": 4,
    "num_generations": 2,
    "max_steps": 6,
    "save_steps": 2,
    "seed": 0,
    "eval": {"enabled": False},
    "episodic": {"rollout_steps": 3, "ppo_epochs": 2, "num_minibatches": 2, "eval_every": 0},
}
GRPO_RUN: dict[str, Any] = {
    "model": "tiny-llava",
    "task": "color_shape",
    "task_overrides": {
        "env_kwargs.image_size": 32,
        "env_kwargs.question": "color",
        "env_kwargs.colors": ["red", "green"],
    },
    "algorithm": "grpo",
    "learning_rate": 1e-3,
    "per_device_batch_size": 8,
    "num_generations": 4,
    "max_new_tokens": 1,
    "max_steps": 4,
    "save_steps": 1,
    "seed": 0,
    "eval": {"enabled": False},
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One thread, here and in the subprocesses: the same arithmetic in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_config(output_dir: Path, algorithm: str, **fields: Any) -> dict[str, Any]:
    base = GRPO_RUN if algorithm == "grpo" else {**EPISODIC_RUN, "algorithm": algorithm}
    return {**base, "output_dir": str(output_dir), **fields}


def _train(data: dict[str, Any]) -> Any:
    from mmrl_harness.train import train

    return train(train_config_from_dict(data))


def _killed_run(data: dict[str, Any], tmp_path: Path, fault: str) -> None:
    """``mmrl train`` in a subprocess that SIGKILLs itself at ``fault``."""
    config = tmp_path / f"run-{fault}.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "MMRL_FAULT_AT": fault,
    }
    done = subprocess.run(
        [sys.executable, "-m", "mmrl_harness", "train", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -9, f"not killed at {fault}: {done.stderr[-2000:]}"


def _trainable(result: Any) -> dict[str, torch.Tensor]:
    model = result.policy.peft_model
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _logged_steps(output_dir: Path, algorithm: str) -> list[int]:
    if algorithm == "grpo":  # TRL's log history travels in trainer_state.json
        state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
        return [int(row["step"]) for row in state["log_history"] if "loss" in row]
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [int(json.loads(line)["step"]) for line in lines]


# -- exact resume ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "faults", "resumed_from"),
    [
        # Killed inside the write of checkpoint-4 (files written, manifest and rename not yet),
        # then, resumed from checkpoint-2, killed after update 5 (logged, not saved).
        ("ppo", ("checkpoint-write:4", "after-update:5"), "checkpoint-4"),
        ("episodic_grpo", ("checkpoint-write:4", "after-update:5"), "checkpoint-4"),
        # TRL writes checkpoint-2 in place; killed before its manifest, then after step 3.
        ("grpo", ("checkpoint-write:2", "after-update:3"), "checkpoint-2"),
    ],
)
def test_a_run_killed_twice_resumes_to_the_uninterrupted_runs_exact_weights(
    tmp_path: Path, algorithm: str, faults: tuple[str, str], resumed_from: str
) -> None:
    out = tmp_path / "killed"
    for fault in faults:
        _killed_run(_run_config(out, algorithm), tmp_path, fault)
    resumed = _train(_run_config(out, algorithm))
    straight = _train(_run_config(tmp_path / "straight", algorithm))

    assert resumed.resumed_from == out / resumed_from
    a, b = _trainable(straight), _trainable(resumed)
    assert a.keys() == b.keys()
    # Same machine, same shapes, same operations in the same order: equality is exact.
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    max_steps = 4 if algorithm == "grpo" else 6
    assert _logged_steps(out, algorithm) == list(range(1, max_steps + 1))
    assert not [p.name for p in out.iterdir() if p.name.startswith((".tmp-", "incomplete-"))]
    for checkpoint in out.glob("checkpoint-*"):
        assert verify_checkpoint(checkpoint) is not None  # a manifest, every file matching it
    if algorithm == "grpo":  # the final adapter in output_dir, for `mmrl eval --checkpoint out`
        final = read_manifest(out)
        assert final is not None and final.step == 4 and final.fusion.name == "concat"
        assert sorted(final.files) == ["adapter_config.json", "adapter_model.safetensors"]
        assert file_problems(out, final) == []


# -- corrupt checkpoints -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An episodic_grpo run of 2 updates with checkpoint-1 and checkpoint-2 (copy before use)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("two") / "run"
    _train(_run_config(out, "episodic_grpo", max_steps=2, save_steps=1))
    return out


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(source, target)
    return target


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's data, past the header: still parses
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "file"),
    [
        (_truncate, "model.safetensors"),
        (_flip_byte, "adapter_model.safetensors"),
        (Path.unlink, "optimizer.bin"),
    ],
)
def test_a_corrupt_latest_checkpoint_is_named_and_the_previous_one_resumed(
    two_checkpoints: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, file: str
) -> None:
    out = _copy(two_checkpoints, tmp_path)
    damage(out / "checkpoint-2" / file)
    with caplog.at_level(logging.WARNING, logger="mmrl_harness"):
        result = _train(_run_config(out, "episodic_grpo", max_steps=2, save_steps=1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"checkpoint-2/{file}" in warnings[0]
    assert result.resumed_from == out / "checkpoint-1"
    assert [h["step"] for h in result.log_history] == [2]
    assert (out / "corrupt-checkpoint-2").is_dir()  # kept for inspection, never resumed from
    assert verify_checkpoint(out / "checkpoint-2") is not None  # written again, intact


def test_no_intact_checkpoint_is_one_line_naming_every_file(
    two_checkpoints: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mmrl_harness.cli import app

    out = _copy(two_checkpoints, tmp_path)
    _truncate(out / "checkpoint-2" / "optimizer.bin")
    _flip_byte(out / "checkpoint-1" / "model.safetensors")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_run_config(out, "episodic_grpo", max_steps=2, save_steps=1)))
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if "error:" in line]
    assert len(error) == 1
    assert "checkpoint-2/optimizer.bin" in error[0] and "checkpoint-1/model.safetensors" in error[0]
    assert "Traceback" not in result.output and "weights_only" not in result.output


# -- changed configs ---------------------------------------------------------------------------
def test_resuming_with_another_task_seed_and_learning_rate_is_refused_naming_them(
    two_checkpoints: Path, tmp_path: Path
) -> None:
    out = _copy(two_checkpoints, tmp_path)
    changed = _run_config(
        out,
        "episodic_grpo",
        max_steps=2,
        save_steps=1,
        seed=1,
        learning_rate=0.01,
        task_overrides={**SHORT_LINE, "env_kwargs.line_length": 4},
        allow_config_change=True,  # never enough for these fields
    )
    with pytest.raises(CheckpointError) as err:
        _train(changed)
    message = str(err.value)
    for field in ("learning_rate: 0.001 -> 0.01", "seed: 0 -> 1", "env_kwargs.line_length"):
        assert field in message
    assert "never change" in message


def test_a_safe_change_needs_allow_config_change(two_checkpoints: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmrl_harness.cli import app

    out = _copy(two_checkpoints, tmp_path)
    longer = _run_config(out, "episodic_grpo", max_steps=3, save_steps=1)
    with pytest.raises(CheckpointError, match=r"max_steps: 2 -> 3.*--allow-config-change"):
        _train(longer)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(longer))
    result = CliRunner().invoke(app, ["train", str(config), "--allow-config-change"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "checkpoint-2" in result.output
    assert _logged_steps(out, "episodic_grpo") == [1, 2, 3]


# -- the output_dir lock -----------------------------------------------------------------------
def test_a_second_run_on_a_locked_output_dir_fails_at_once_naming_the_holder(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from mmrl_harness.cli import app

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from mmrl_harness.train.lock import output_dir_lock\n"
            f"with output_dir_lock({str(out)!r}):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(_run_config(out, "ppo")))
        started = time.monotonic()
        result = CliRunner().invoke(app, ["train", str(config)])
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"PID {holder.pid}" in lines[0] and str(out) in lines[0]
    assert elapsed < 30  # refused before any model is built (a generous bound on a shared CPU)
    assert not (out / "checkpoint-2").exists()


# -- evaluation from the manifest --------------------------------------------------------------
@pytest.fixture(scope="module")
def weighted_sum_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One PPO update of tiny-llava with a per-channel weighted_sum adapter (large lr, so the
    adapter's coefficients move), and its trained policy."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ws") / "run"
    result = _train(
        _run_config(
            out,
            "ppo",
            max_steps=1,
            save_steps=1,
            learning_rate=5e-2,
            fusion={"name": "weighted_sum", "options": {"per_channel": True}},
        )
    )
    return out / "checkpoint-1", result.policy


def _logits(loaded: Any) -> torch.Tensor:
    import numpy as np

    from mmrl_harness.train.episodic.policy import model_inputs

    frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    inputs, _ = model_inputs(loaded, [frame], ["Where is the target? Answer left or right."])
    with torch.no_grad():
        return loaded.model(**inputs).logits[0, -1].float()


def test_eval_restores_the_trained_model_and_adapter_from_the_manifest(
    weighted_sum_checkpoint: tuple[Path, Any],
) -> None:
    from mmrl_harness.evaluate import run_eval
    from mmrl_harness.models.loading import load_vlm
    from mmrl_harness.train.restore import load_for_eval

    checkpoint, trained = weighted_sum_checkpoint
    loaded, adapter, setup = load_for_eval(checkpoint)  # no model, no fusion given
    assert (setup.model, setup.fusion, setup.fusion_options["per_channel"]) == (
        "tiny-llava",
        "weighted_sum",
        True,
    )
    restored_values = adapter.log_values(loaded.model)
    assert restored_values == pytest.approx(trained.fusion_adapter.log_values(trained.peft_model))
    start = {"weighted_sum/text": 1.0, "weighted_sum/image": 1.0, "weighted_sum/image_to_text": 0.0}
    assert restored_values.keys() == start.keys()
    assert max(abs(restored_values[k] - start[k]) for k in start) > 1e-3  # they were trained
    # Merged LoRA (W + BA in one matrix) rounds differently from the unmerged forward: float32.
    assert torch.allclose(_logits(loaded), _logits(trained.vlm), atol=1e-5)
    concat = load_vlm("tiny-llava")
    assert (_logits(loaded) - _logits(concat)).abs().max() > 1e-3

    results = run_eval(
        None,
        ["numberline"],
        checkpoint=str(checkpoint),
        task_overrides=SHORT_LINE,
        episodes=2,
        policy_mode="action_logits",
    )
    assert results.provenance.fusion.name == "weighted_sum"
    assert results.provenance.fusion.options["per_channel"] is True


def test_eval_refuses_another_family_another_adapter_and_mismatched_keys(
    weighted_sum_checkpoint: tuple[Path, Any], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mmrl_harness.cli import app
    from mmrl_harness.train.restore import CheckpointMismatchError, load_for_eval

    checkpoint, _ = weighted_sum_checkpoint
    with pytest.raises(CheckpointMismatchError) as err:
        load_for_eval(checkpoint, model="tiny-qwen2-vl")
    assert "llava" in str(err.value) and "qwen2_vl" in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="'weighted_sum', not 'concat'"):
        load_for_eval(checkpoint, fusion="concat")
    cli = CliRunner().invoke(
        app,
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--task",
            "numberline",
            "--model",
            "tiny-qwen2-vl",
        ],
    )
    assert cli.exit_code == 1
    errors = [line for line in cli.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "llava" in errors[0] and "qwen2_vl" in errors[0]
    assert "Traceback" not in cli.output
    # Without a manifest (an older checkpoint) the caller's choice is used, and a partial load
    # is refused: the weighted_sum coefficients have no place in a concat model.
    legacy = tmp_path / "legacy"
    shutil.copytree(checkpoint, legacy)
    (legacy / "manifest.json").unlink()
    with pytest.raises(CheckpointMismatchError, match="checkpoint tensors the model lacks"):
        load_for_eval(legacy, model="tiny-llava")
