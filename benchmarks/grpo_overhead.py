"""Harness overhead: one GRPO step through ``mmrl`` vs a minimal plain-TRL script, side by side.

Both sides train the same tiny LLaVA folder with the same LoRA, the same rows (prompt, 32 px
image, seed), the same GRPOConfig values and an equivalent reward (the harness replays the task
env; plain TRL compares the first word with an ``answer`` column). Each measurement is a fresh
subprocess, so peak memory (``ru_maxrss``, the whole process) is per side; the sides alternate
(harness, plain, harness, ...) so machine load hits both alike. Step time is the wall time
between consecutive ``on_step_end`` callbacks (generation, reward, loss, backward, optimizer,
logging), the first ``--warmup`` steps dropped.

    python benchmarks/grpo_overhead.py [--rounds 3] [--steps 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUN: dict[str, Any] = {
    "model": "tiny-llava",
    "lora": {"target_modules": "all-linear"},  # what the plain script's LoraConfig says too
    "task": "color_shape",
    "task_overrides": {
        "env_kwargs.image_size": 32,
        "env_kwargs.question": "color",
        "env_kwargs.colors": ["red", "green", "blue", "yellow"],
    },
    "learning_rate": 1e-3,
    "per_device_batch_size": 64,
    "num_generations": 8,
    "max_new_tokens": 1,
    "logging_steps": 1,
    "resume": False,
    "grpo": {"lr_scheduler_type": "constant"},
}


def step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.marks.append(time.perf_counter())

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.marks.append(time.perf_counter())

    return StepTimer()


def _config(output_dir: str, steps: int) -> Any:
    from mmrl_harness.train import train_config_from_dict

    return train_config_from_dict(
        {**RUN, "output_dir": output_dir, "max_steps": steps, "save_steps": steps + 1}
    )


def worker_harness(data_dir: str, output_dir: str, steps: int) -> list[float]:
    """The harness path of ``mmrl train``: build_policy + train_grpo (evaluation left out)."""
    from mmrl_harness.train import build_policy
    from mmrl_harness.train.algorithms.grpo_trainer import train_grpo

    config = _config(output_dir, steps)
    timer = step_timer()
    train_grpo(config, build_policy(config), callbacks=[timer])
    return [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)]


def worker_plain(data_dir: str, output_dir: str, steps: int) -> list[float]:
    """A minimal plain-TRL script: no harness import at all."""
    import json as _json

    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed
    from trl import GRPOConfig, GRPOTrainer

    meta = _json.loads((Path(data_dir) / "meta.json").read_text())
    set_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(meta["model_dir"])
    processor = AutoProcessor.from_pretrained(meta["model_dir"])
    dataset = load_from_disk(str(Path(data_dir) / "rows"))

    def reward(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
        words = [(c[0]["content"].split() or [""])[0].lower() for c in completions]
        return [float(w == a) for w, a in zip(words, answer, strict=True)]

    args = GRPOConfig(**{**meta["grpo_kwargs"], "output_dir": output_dir})
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", modules_to_save=["lm_head"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    timer = step_timer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora,
        callbacks=[timer],
    )
    trainer.train()
    return [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)]


def save_rows_with_answers(task: Any, dataset: Any, folder: Path) -> None:
    """The plain-TRL side's training rows: the harness's prompts plus each seed's oracle answer."""
    from mmrl_harness.tasks import make_task_env

    env = make_task_env(task)
    answers = []
    for seed in dataset["seed"]:
        env.reset(seed=seed)
        answers.append(env.oracle())
    dataset.add_column("answer", answers).save_to_disk(str(folder))


def prepare(data_dir: Path, steps: int) -> None:
    """The shared rows (with the answer for the plain reward) and the exact GRPOConfig values."""
    from mmrl_harness.train import build_policy
    from mmrl_harness.train.algorithms.grpo_trainer import (
        build_grpo_dataset,
        grpo_arguments,
        grpo_task,
    )

    config = _config(str(data_dir / "unused"), steps)
    task = grpo_task(config)
    dataset = build_grpo_dataset(task, config.train_seeds.seeds())
    save_rows_with_answers(task, dataset, data_dir / "rows")
    policy = build_policy(config)
    args = grpo_arguments(config, policy)
    keys = [
        "max_steps", "learning_rate", "per_device_train_batch_size",
        "gradient_accumulation_steps", "num_generations", "max_completion_length",
        "temperature", "save_strategy", "save_steps", "save_total_limit", "logging_steps",
        "report_to", "seed", "use_cpu", "disable_tqdm", "bf16", "fp16",
        "activation_checkpointing", "generation_kwargs", "lr_scheduler_type",
    ]  # fmt: skip
    meta = {
        "model_dir": str(policy.loaded.source_dir),
        "grpo_kwargs": {k: getattr(args, k) for k in keys},
    }
    meta["grpo_kwargs"]["report_to"] = "none"
    meta["grpo_kwargs"]["lr_scheduler_type"] = "constant"
    meta["grpo_kwargs"]["save_strategy"] = "steps"
    (data_dir / "meta.json").write_text(json.dumps(meta, default=str))


def _run_worker(side: str, data_dir: Path, steps: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, __file__, "--worker", side, "--data", str(data_dir),
            "--out", out, "--steps", str(steps), "--threads", str(threads),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{side} worker failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None, help="write the numbers as JSON here")
    parser.add_argument("--worker", choices=("harness", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        work = worker_harness if args.worker == "harness" else worker_plain
        steps = work(args.data, args.out, args.steps)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"step_s": steps, "peak_mib": peak}))
        return

    results: dict[str, list[dict[str, Any]]] = {"harness": [], "plain": []}
    with tempfile.TemporaryDirectory() as data:
        prepare(Path(data), args.steps)
        for round_index in range(args.rounds):
            for side in ("harness", "plain") if round_index % 2 == 0 else ("plain", "harness"):
                results[side].append(_run_worker(side, Path(data), args.steps, args.threads))
    summary = {}
    for side, runs in results.items():
        steps = [s for run in runs for s in run["step_s"][args.warmup :]]
        summary[side] = {
            "step_ms_median": 1e3 * statistics.median(steps),
            "step_ms_mean": 1e3 * statistics.fmean(steps),
            "peak_mib_median": statistics.median(run["peak_mib"] for run in runs),
            "steps_measured": len(steps),
        }
    ratio_time = summary["harness"]["step_ms_median"] / summary["plain"]["step_ms_median"]
    ratio_mem = summary["harness"]["peak_mib_median"] / summary["plain"]["peak_mib_median"]
    print(f"torch threads {args.threads}, {args.rounds} rounds x {args.steps} steps "
          f"(first {args.warmup} dropped), batch 64 (8 prompts x 8), tiny-llava, CPU")  # fmt: skip
    for side in ("harness", "plain"):
        s = summary[side]
        print(f"{side:8s} step {s['step_ms_median']:.1f} ms median ({s['step_ms_mean']:.1f} mean), "
              f"peak RSS {s['peak_mib_median']:.0f} MiB")  # fmt: skip
    print(f"ratio harness/plain: step time {ratio_time:.3f}, peak memory {ratio_mem:.3f}")
    if args.output:
        payload = {**summary, "ratio_step_time": ratio_time, "ratio_peak_memory": ratio_mem,
                   "threads": args.threads, "rounds": args.rounds, "steps": args.steps}  # fmt: skip
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
