"""Episodic PPO and group-relative GRPO learn NumberLine from images on the tiny LLaVA.

    python benchmarks/episodic_learning.py [--threads 1] [--seeds 0 1 2] [--algorithms ppo episodic_grpo]

NumberLine as shipped (5 positions, at most 10 turns) at 32 px, ``tiny-llava`` (about 110k
parameters) with LoRA r=8 on every linear layer and ``lm_head`` trained, ``concat`` fusion, the
``action_logits`` policy. Greedy success on the task's first 50 evaluation seeds is measured
before training and every ``--eval-every`` updates; the two constant-action policies (always
left, always right) give the floor a collapsed policy sits on. Reported per algorithm and seed:
updates and training seconds to the first evaluation >= 0.9 (evaluation time excluded), the best
and the final greedy success, and seconds per update — each as wall-clock and as this process's
CPU time, which on a shared machine does not count the time other processes held the cores. Writes ``docs/img/episodic_learning.png``
(success against updates and against training time) and ``benchmarks/results/episodic_learning.json``.

The runs are sequential in one process with a fixed torch thread count (on small shared CPUs torch
slows sharply when another process competes for the cores), so their timings compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmrl_harness.rollout import PolicyOutput, run_episodes
from mmrl_harness.tasks.episode import Observation

ROOT = Path(__file__).resolve().parents[1]
TASK_OVERRIDES = {"env_kwargs.image_size": 32}
EVAL_EPISODES = 50

#: Per algorithm: shared TrainConfig fields and the episodic block.
SETTINGS: dict[str, dict[str, Any]] = {
    "ppo": {
        "learning_rate": 3e-4,
        "per_device_batch_size": 16,
        "episodic": {"rollout_steps": 16, "ppo_epochs": 4, "num_minibatches": 4},
    },
    "episodic_grpo": {
        "learning_rate": 1e-3,
        "per_device_batch_size": 32,
        "num_generations": 4,
        "episodic": {"ppo_epochs": 4, "num_minibatches": 4},
    },
}


class ConstantPolicy:
    """Always says the same action word (the floor a collapsed policy sits on)."""

    def __init__(self, word: str) -> None:
        self.word = word

    def act(
        self, observations: Sequence[Observation], action_words: Sequence[str]
    ) -> list[PolicyOutput]:
        """The same word for every observation."""
        return [PolicyOutput(self.word, 1) for _ in observations]


def constant_action_success() -> dict[str, float]:
    """Greedy success of always-left and always-right on the evaluation seeds."""
    from mmrl_harness.evaluate import resolve_task
    from mmrl_harness.tasks.gym_task import make_task_env

    task = resolve_task("numberline", TASK_OVERRIDES)
    seeds = task.eval_seeds.seeds()[:EVAL_EPISODES]
    out = {}
    for word in ("left", "right"):
        records = run_episodes(lambda: make_task_env(task), ConstantPolicy(word), seeds)
        out[word] = sum(r.success for r in records) / len(records)
    return out


def run(algorithm: str, seed: int, updates: int, eval_every: int, workdir: Path) -> dict[str, Any]:
    """One training run; its evaluation curve and timings."""
    from accelerate import Accelerator

    from mmrl_harness.evaluate import resolve_task
    from mmrl_harness.train.config import train_config_from_dict
    from mmrl_harness.train.episodic.metrics import greedy_success_rate
    from mmrl_harness.train.episodic.trainer import train_episodic
    from mmrl_harness.train.policy import build_policy

    settings = SETTINGS[algorithm]
    config = train_config_from_dict(
        {
            "model": "tiny-llava",
            "lora": {"target_modules": "all-linear"},  # as examples/ppo_numberline_tiny.yaml
            "task": "numberline",
            "task_overrides": TASK_OVERRIDES,
            "algorithm": algorithm,
            "seed": seed,
            "max_steps": updates,
            "save_steps": updates,
            "output_dir": str(workdir / f"{algorithm}-{seed}"),
            "use_cpu": True,
            **{k: v for k, v in settings.items() if k != "episodic"},
            "episodic": {
                **settings["episodic"],
                "eval_every": eval_every,
                "eval_episodes": EVAL_EPISODES,
                "keep_best": False,
            },
        }
    )
    policy = build_policy(config)
    accelerator = Accelerator(cpu=True)
    task = resolve_task(config.task, config.task_overrides)
    before = greedy_success_rate(accelerator, policy.vlm, task, "action_logits", EVAL_EPISODES)
    result = train_episodic(config, policy, accelerator)
    curve = [{"update": 0, "train_s": 0.0, "train_cpu_s": 0.0, "success": before}]
    train_s, eval_s, cpu_s = 0.0, 0.0, 0.0
    for row in result.log_history:
        eval_s += row.get("eval_time", 0.0)
        train_s = row["wall_time_s"] - eval_s
        cpu_s += row["step_cpu_time"]
        if "eval/success_rate" in row:
            curve.append(
                {
                    "update": row["step"],
                    "train_s": train_s,
                    "train_cpu_s": cpu_s,
                    "success": row["eval/success_rate"],
                }
            )
    first = next((p for p in curve if p["success"] >= 0.9), None)
    step_times = [row["step_time"] for row in result.log_history]
    cpu_times = [row["step_cpu_time"] for row in result.log_history]
    return {
        "algorithm": algorithm,
        "seed": seed,
        "curve": curve,
        "success_before": before,
        "best_success": max(p["success"] for p in curve),
        "final_success": curve[-1]["success"],
        "updates_to_0.9": first["update"] if first else None,
        "seconds_to_0.9": first["train_s"] if first else None,
        "cpu_seconds_to_0.9": first["train_cpu_s"] if first else None,
        "s_per_update": statistics.median(step_times),
        "cpu_s_per_update": statistics.median(cpu_times),
        "train_s": train_s,
        "train_cpu_s": cpu_s,
        "peak_memory_mib": max(row["peak_memory_mib"] for row in result.log_history),
    }


def plot(runs: list[dict[str, Any]], floor: float, path: Path) -> None:
    """Success against updates and against training seconds, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colours = {"ppo": "tab:blue", "episodic_grpo": "tab:orange"}
    for r in runs:
        xs_u = [p["update"] for p in r["curve"]]
        xs_t = [p["train_cpu_s"] for p in r["curve"]]
        ys = [p["success"] for p in r["curve"]]
        label = f"{r['algorithm']} seed {r['seed']}"
        for ax, xs in zip(axes, (xs_u, xs_t), strict=True):
            style = ("-", "--", ":", "-.")[r["seed"] % 4]
            ax.plot(
                xs,
                ys,
                color=colours[r["algorithm"]],
                linestyle=style,
                alpha=0.8,
                marker=".",
                label=label,
            )
    for ax, name in zip(
        axes, ("updates", "training CPU seconds (1 thread, evaluation excluded)"), strict=True
    ):
        ax.axhline(0.9, color="gray", linestyle="--", linewidth=1)
        ax.axhline(floor, color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("greedy success (50 eval episodes)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("NumberLine (5 positions, 32 px) on tiny-llava + LoRA: episodic PPO vs GRPO")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    """Run every (algorithm, seed), print the table, write the JSON and the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algorithms", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--updates", type=int, nargs="+", default=[30, 50], help="per algorithm")
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--png", type=Path, default=ROOT / "docs/img/episodic_learning.png")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks/results/episodic_learning.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}")
    floor = constant_action_success()
    print(f"constant-action greedy success: {floor}")
    runs = []
    updates = dict(zip(args.algorithms, args.updates, strict=False))
    with tempfile.TemporaryDirectory() as workdir:
        for algorithm in args.algorithms:
            for seed in args.seeds:
                started = time.perf_counter()
                r = run(algorithm, seed, updates.get(algorithm, 40), args.eval_every, Path(workdir))
                runs.append(r)
                print(
                    f"{algorithm:>13} seed {seed}: before {r['success_before']:.2f} -> best "
                    f"{r['best_success']:.2f}, final {r['final_success']:.2f}; >= 0.9 at update "
                    f"{r['updates_to_0.9']} ({_s(r['seconds_to_0.9'])} wall, "
                    f"{_s(r['cpu_seconds_to_0.9'])} CPU); {r['s_per_update']:.2f} s/update wall, "
                    f"{r['cpu_s_per_update']:.2f} CPU ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "settings": SETTINGS}
    args.json.write_text(
        json.dumps({"meta": meta, "constant_action": floor, "runs": runs}, indent=1) + "\n"
    )
    plot(runs, max(floor.values()), args.png)
    print(f"wrote {args.json} and {args.png}")


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s"


if __name__ == "__main__":
    main()
