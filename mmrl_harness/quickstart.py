"""The README's first command: GRPO + LoRA fine-tuning of a tiny VLM, offline, in about a minute.

Builds the tiny VLM, evaluates it on a built-in single-turn task (name the colour of the shape),
trains it with GRPO through the same ``train`` every run uses, evaluates again, and prints the
improvement in greedy and sampled success. Sampled success matters as much as greedy: a policy
whose right answer only barely wins the argmax looks perfect greedily and is still near chance
when it samples.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.table import Table

from mmrl_harness.errors import InputError

if TYPE_CHECKING:
    from mmrl_harness.train.config import TrainConfig

TINY_BY_FAMILY = {"llava": "tiny-llava", "qwen2_vl": "tiny-qwen2-vl"}

#: The run, as in examples/grpo_color_tiny.yaml (measured settings: see docs/training.md).
QUICKSTART_CONFIG: dict[str, Any] = {
    "fusion": {"name": "concat"},
    # The tiny model is random end to end, so its vision tower and projector must learn too:
    # LoRA on every linear layer, not the default (the language model's layers only).
    "lora": {"target_modules": "all-linear"},
    "task": "color_shape",
    "task_overrides": {
        "env_kwargs.image_size": 32,
        "env_kwargs.question": "color",
        "env_kwargs.colors": ["red", "green", "blue", "yellow"],
    },
    "algorithm": "grpo",
    "max_steps": 180,
    "learning_rate": 1e-3,
    "per_device_batch_size": 64,
    "num_generations": 8,
    "max_new_tokens": 1,
    "save_steps": 1000,  # one final checkpoint is enough here
    "logging_steps": 10,
    "grpo": {"lr_scheduler_type": "constant"},
    "eval": {"episodes": 200},
}


def quickstart_config(family: str = "llava", output_dir: str = "runs/quickstart") -> TrainConfig:
    """The quickstart's ``TrainConfig`` for a tiny family (``llava`` or ``qwen2_vl``)."""
    from mmrl_harness.train.config import train_config_from_dict

    model = TINY_BY_FAMILY.get(family)
    if model is None:
        raise InputError(
            f"unknown tiny family {family!r}; choose one of {', '.join(TINY_BY_FAMILY)}"
        )
    return train_config_from_dict(
        {**QUICKSTART_CONFIG, "model": model, "output_dir": output_dir, "resume": False}
    )


def run_quickstart(
    family: str = "llava",
    console: Console | None = None,
    max_steps: int | None = None,
    boards_dir: str | Path | None = "runs/leaderboards",
) -> dict[str, float]:
    """Train the tiny VLM with GRPO + LoRA and print success before and after.

    With ``boards_dir``, the trained policy's greedy results are then submitted to the local
    board ``quickstart`` there (created on first use) and its page rendered.
    Returns ``{"greedy_before", "sampled_before", "greedy_after", "sampled_after"}``.
    """
    from mmrl_harness.train import build_policy, evaluate_policy
    from mmrl_harness.train.algorithms.grpo_trainer import train_grpo

    console = console or Console()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmrl-quickstart-") as output_dir:
        config = quickstart_config(family, output_dir)
        if max_steps is not None:
            config = config.model_copy(update={"max_steps": max_steps})
        task = config.task_overrides
        console.print(
            f"[bold]mmrl quickstart[/]: {config.model} + {config.fusion.name} + LoRA, GRPO on "
            f"{config.task} ({len(task['env_kwargs.colors'])} colours, "
            f"{task['env_kwargs.image_size']} px), {config.max_steps} steps — all offline"
        )
        with console.status(f"building {config.model} and evaluating it untrained"):
            policy = build_policy(config)
            scores = {
                "greedy_before": _success(evaluate_policy(config, policy, do_sample=False)),
                "sampled_before": _success(evaluate_policy(config, policy, do_sample=True)),
            }
        console.print(
            f"{config.model}: {policy.trainable_parameters():,} trainable of "
            f"{sum(p.numel() for p in policy.peft_model.parameters()):,} parameters; "
            f"untrained success {scores['greedy_before']:.2f} greedy, "
            f"{scores['sampled_before']:.2f} sampled"
        )
        result = train_grpo(config, policy, console=console)
        with console.status("evaluating the trained policy"):
            results_path = Path(output_dir) / "results.json"
            scores["greedy_after"] = _success(
                evaluate_policy(config, policy, results_path, do_sample=False)
            )
            scores["sampled_after"] = _success(evaluate_policy(config, policy, do_sample=True))
        page = None
        if boards_dir is not None:
            with console.status("submitting to the local board"):
                page = submit_to_local_board(results_path, config, Path(boards_dir))
    table = Table(title=f"success rate on {config.task} ({config.eval.episodes} episodes)")
    for column in ("policy", "before", "after", "change"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for mode in ("greedy", "sampled"):
        before, after = scores[f"{mode}_before"], scores[f"{mode}_after"]
        table.add_row(mode, f"{before:.2f}", f"{after:.2f}", f"{after - before:+.2f}")
    console.print(table)
    if page is not None:
        console.print(f"submitted to the local board: open {page.as_uri()}")
    console.print(
        f"trained {result.global_step} steps in {result.train_seconds:.0f} s; whole quickstart "
        f"{time.perf_counter() - started:.0f} s. Next: `mmrl train examples/grpo_color_tiny.yaml`"
    )
    return scores


def submit_to_local_board(results: Path, config: TrainConfig, boards_dir: Path) -> Path:
    """Submit ``results`` to the board ``quickstart`` in ``boards_dir`` (created on first use,
    for the quickstart's task and evaluation seeds); render it and return its ``index.html``."""
    from mmrl_harness.evaluate import resolve_seeds, resolve_task
    from mmrl_harness.leaderboard.render import render
    from mmrl_harness.leaderboard.submit import submit

    board = boards_dir / "quickstart" / "board.yaml"
    if not board.exists():
        task = resolve_task(config.task, config.task_overrides)
        seeds = resolve_seeds(task, config.eval.episodes, config.eval.seeds)
        spec = {
            "title": "quickstart runs (local)",
            "description": "Each `mmrl quickstart` submits its trained policy here.",
            "tasks": {task.name: {"seeds": seeds, "overrides": dict(config.task_overrides)}},
            "required_provenance": ["harness_version", "fusion.name"],
        }
        board.parent.mkdir(parents=True, exist_ok=True)
        board.write_text(yaml.safe_dump(spec, sort_keys=False))
    submit([results], "quickstart", boards_dir)
    return render("quickstart", boards_dir)[1]


def _success(results: Any) -> float:
    (task_result,) = results.tasks.values()
    return float(task_result.metrics["success_rate"].value)
