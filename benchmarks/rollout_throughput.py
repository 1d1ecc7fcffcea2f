"""Batched rollouts vs one episode at a time: episodes/second ratios, measured side by side.

For each N, the same ``waves * N`` episodes (same tiny policy, task and seeds) run once through
the rollout engine with ``batch_size=N`` and once with ``batch_size=1``, so environment creation
is amortised as in a real evaluation; a bare batched ``generate`` of the
same prompts vs one-at-a-time gives the headroom the engine is compared with. The bare side runs
the very episodes the engine runs (each seed's first image and prompt, drawn before timing), in
the same batches: repeating one episode's prompt instead would make every batch uniform (one
chat template to render, no padding) and overstate the headroom. Repetitions are
interleaved; episodes/s are medians, and the ratios are medians of the ratios paired within each
repetition (so a busier moment of a shared machine hits both sides of a ratio alike).
``--clock cpu`` times this process's CPU time, which with one thread excludes waiting for a core.

    python benchmarks/rollout_throughput.py [--threads 2] [--reps 3] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from mmrl_harness.evaluate import resolve_task
from mmrl_harness.models.generation import build_inputs, generate_ids
from mmrl_harness.models.loading import load_vlm
from mmrl_harness.rollout import VLMPolicy, run_episodes
from mmrl_harness.tasks import make_task_env

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    """Seconds ``fn()`` took on ``clock``."""
    start = clock()
    fn()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    parser.add_argument("--task", default="color_shape")
    parser.add_argument("--sizes", default="1,4,16,64")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--waves", type=int, default=4, help="episodes per run = waves * N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, task={args.task}, "
        f"clock={args.clock}"
    )

    loaded = load_vlm("tiny-llava")
    task = resolve_task(args.task, {"env_kwargs.image_size": 32})
    policy = VLMPolicy(loaded, max_new_tokens=args.max_new_tokens)
    env = make_task_env(task)
    # The first observation of every episode the engine runs (seeds 0..), drawn before timing.
    firsts = [env.reset(seed=seed) for seed in range(args.waves * max(sizes))]
    env.close()

    def bare(n: int, batch: int) -> None:
        for start in range(0, n, batch):
            chunk = firsts[start : min(start + batch, n)]
            inputs = build_inputs(loaded, [o.to_pil() for o in chunk], [o.text for o in chunk])
            generate_ids(loaded, inputs, max_new_tokens=args.max_new_tokens)

    def engine(n: int, batch: int) -> None:
        run_episodes(lambda: make_task_env(task), policy, list(range(n)), batch_size=batch)

    print(
        "| N | engine batched ep/s | engine sequential ep/s | engine ratio | bare generate ratio | kept |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        times: dict[str, list[float]] = {"eb": [], "es": [], "bb": [], "bs": []}
        engine(min(n, 4), min(n, 4))  # warm-up
        episodes = args.waves * n
        for _ in range(args.reps):
            times["eb"].append(timed(partial(engine, episodes, n), clock))
            times["es"].append(timed(partial(engine, episodes, 1), clock))
            times["bb"].append(timed(partial(bare, episodes, n), clock))
            times["bs"].append(timed(partial(bare, episodes, 1), clock))
        med = {k: statistics.median(v) for k, v in times.items()}
        engine_ratios = [s / b for s, b in zip(times["es"], times["eb"], strict=True)]
        bare_ratios = [s / b for s, b in zip(times["bs"], times["bb"], strict=True)]
        kept = [e / b for e, b in zip(engine_ratios, bare_ratios, strict=True)]
        print(
            f"| {n} | {episodes / med['eb']:.1f} | {episodes / med['es']:.1f} "
            f"| {statistics.median(engine_ratios):.2f}x | {statistics.median(bare_ratios):.2f}x "
            f"| {statistics.median(kept):.0%} |"
        )


if __name__ == "__main__":
    main()
