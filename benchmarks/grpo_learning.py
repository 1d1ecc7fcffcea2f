"""Learning on the embedded default: greedy and sampled success vs training time and steps.

Trains ``examples/grpo_color_tiny.yaml`` (tiny LLaVA, GRPO + LoRA, name the colour of the shape
among 4, 32 px) and evaluates greedy and sampled success every ``--eval-every`` steps on the
task's evaluation seeds. The evaluation time is kept off the training clock. Target: both
>= 0.95 within 2 minutes of training on a 2-core machine. Writes a PNG (needs matplotlib: the
``bench`` extra) and the numbers as JSON.

    python benchmarks/grpo_learning.py [--seeds 0 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.95


def run_one(seed: int, steps: int, eval_every: int, episodes: int) -> list[dict[str, float]]:
    """One training run; a row per evaluation: step, train_s, greedy, sampled."""
    from transformers import TrainerCallback

    from mmrl_harness.train import build_policy, evaluate_policy, load_train_config
    from mmrl_harness.train.algorithms.grpo_trainer import train_grpo

    with tempfile.TemporaryDirectory() as out:
        config = load_train_config(
            REPO / "examples" / "grpo_color_tiny.yaml",
            {"output_dir": out, "seed": seed, "max_steps": steps, "save_steps": steps + 1,
             "eval.episodes": episodes, "resume": False},
        )  # fmt: skip
        policy = build_policy(config)
        rows: list[dict[str, float]] = []

        class Probe(TrainerCallback):
            """Evaluate every ``eval_every`` steps with the training clock stopped."""

            def __init__(self) -> None:
                self.started = 0.0
                self.eval_seconds = 0.0

            def probe(self, step: int) -> None:
                paused = time.perf_counter()
                greedy = evaluate_policy(config, policy, do_sample=False)
                sampled = evaluate_policy(config, policy, do_sample=True)
                train_s = paused - self.started - self.eval_seconds
                rows.append({
                    "step": step,
                    "train_s": train_s,
                    "greedy": greedy.tasks[config.task].metrics["success_rate"].value,
                    "sampled": sampled.tasks[config.task].metrics["success_rate"].value,
                })  # fmt: skip
                self.eval_seconds += time.perf_counter() - paused
                print(f"seed {seed} step {step:4d} train {train_s:6.1f} s  "
                      f"greedy {rows[-1]['greedy']:.3f}  sampled {rows[-1]['sampled']:.3f}",
                      flush=True)  # fmt: skip

            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self.started = time.perf_counter()
                self.probe(0)

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if state.global_step % eval_every == 0:
                    self.probe(state.global_step)

        train_grpo(config, policy, callbacks=[Probe()])
    return rows


def first_reaching(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The first evaluation where greedy and sampled success are both >= TARGET."""
    return next((r for r in rows if r["greedy"] >= TARGET and r["sampled"] >= TARGET), None)


def plot(runs: dict[int, list[dict[str, float]]], path: Path, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for seed, rows in runs.items():
        for ax, x in zip(axes, ("train_s", "step"), strict=True):
            xs = [r[x] for r in rows]
            ax.plot(xs, [r["greedy"] for r in rows], color=f"C{seed}", label=f"seed {seed} greedy")
            ax.plot(xs, [r["sampled"] for r in rows], color=f"C{seed}", linestyle="--",
                    label=f"seed {seed} sampled")  # fmt: skip
    for ax, label in zip(
        axes, ("training time (s)", "GRPO steps (64 completions each)"), strict=True
    ):
        ax.axhline(TARGET, color="gray", linewidth=0.8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].axvline(120, color="red", linewidth=0.8, linestyle=":")
    axes[0].set_ylabel("success rate (200 eval episodes)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"GRPO + LoRA, tiny LLaVA, 4-colour task; CPU, {threads} torch thread(s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--png", default=str(REPO / "docs" / "img" / "grpo_learning.png"))
    parser.add_argument("--json", default=str(REPO / "docs" / "img" / "grpo_learning.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    runs = {seed: run_one(seed, args.steps, args.eval_every, args.episodes) for seed in args.seeds}
    print(f"\ntorch threads {args.threads}; first evaluation with greedy and sampled >= {TARGET}:")
    for seed, rows in runs.items():
        hit = first_reaching(rows)
        where = f"step {hit['step']:.0f}, {hit['train_s']:.0f} s" if hit else "not reached"
        last = rows[-1]
        print(f"  seed {seed}: {where}; final greedy {last['greedy']:.3f} "
              f"sampled {last['sampled']:.3f}")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    payload = {"threads": args.threads, "runs": {str(k): v for k, v in runs.items()}}
    Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
    plot(runs, Path(args.png), args.threads)
    print(f"wrote {args.png} and {args.json}")


if __name__ == "__main__":
    main()
