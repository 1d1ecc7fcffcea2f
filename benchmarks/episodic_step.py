"""Seconds per episodic PPO update on ``examples/ppo_numberline_tiny.yaml``, two code trees side by side.

    python benchmarks/episodic_step.py [--base /path/to/older/checkout] [--rounds 5] [--updates 6]

Each round runs the example config (16 environments x 16 turns, 4 epochs x 4 minibatches,
``tiny-llava`` with LoRA on every linear layer) for ``--updates`` updates, evaluation and
checkpoints off except the last, in a fresh process: first with this tree's ``mmrl_harness``,
then (with ``--base``) with the one under ``--base``, alternating A, B, A, B... so that load from
other processes on a shared machine falls on both alike. Per run the median over its updates
(the first skipped: warm-up) of ``step_time`` (wall), ``step_cpu_time`` (this process's CPU) and
``rollout_time``; reported are the medians over rounds and their ratio. Writes
``benchmarks/results/episodic_step.json``.

A run imports the package of its tree by putting that tree first on ``PYTHONPATH``; the worker
uses only ``train_config_from_dict``, ``build_policy`` and ``train_episodic``, so any checkout
since the episodic trainer moved to ``train/episodic/`` can be the base.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/ppo_numberline_tiny.yaml"


def worker(updates: int, threads: int, output_dir: str) -> dict[str, Any]:
    """Train ``updates`` updates of the example in this process; median timings per update."""
    import torch
    import yaml

    import mmrl_harness
    from mmrl_harness.train.config import train_config_from_dict
    from mmrl_harness.train.episodic.trainer import train_episodic
    from mmrl_harness.train.policy import build_policy

    torch.set_num_threads(threads)
    raw = yaml.safe_load((ROOT / EXAMPLE).read_text())
    raw.update(max_steps=updates, save_steps=updates, output_dir=output_dir, use_cpu=True)
    raw["episodic"] = {**raw["episodic"], "eval_every": 0, "keep_best": False}
    config = train_config_from_dict(raw)
    result = train_episodic(config, build_policy(config))
    rows = result.log_history[1:]  # the first update warms caches and allocators up
    return {
        "package": str(Path(mmrl_harness.__file__).parent),
        "step_time": statistics.median(r["step_time"] for r in rows),
        "step_cpu_time": statistics.median(r["step_cpu_time"] for r in rows),
        "rollout_time": statistics.median(r["rollout_time"] for r in rows),
        "reward": [r["reward"] for r in result.log_history],
    }


def tree_metadata(tree: Path, folder: Path) -> Path:
    """A ``mmrl_harness`` dist-info in ``folder`` with ``tree``'s own entry points.

    Plugins (the model families, fusion adapters) are found through the installed package's
    entry points, and a tree's may name modules another tree lacks (the families moved to
    ``models/families/``); ahead of site-packages on the path, this one is found first.
    """
    import tomllib

    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    info = folder / f"mmrl_harness-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    groups = project.get("entry-points", {})
    lines = [
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in groups.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return folder


def run_tree(tree: Path, updates: int, threads: int) -> dict[str, Any]:
    """One worker process importing ``mmrl_harness`` (and its entry points) from ``tree``."""
    with tempfile.TemporaryDirectory() as out:
        meta = tree_metadata(tree, Path(out) / "meta")
        path = os.pathsep.join([str(tree), str(meta), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        cmd = [sys.executable, __file__, "--worker", "--updates", str(updates)]
        cmd += ["--threads", str(threads), "--output-dir", str(Path(out) / "run")]
        done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"worker in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over rounds."""
    keys = ("step_time", "step_cpu_time", "rollout_time")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main() -> None:
    """Interleave the trees' runs, print the medians and ratios, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="an older checkout to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/episodic_step.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.updates, args.threads, args.output_dir)))
        return
    trees = {"this tree": ROOT} | ({"base": args.base.resolve()} if args.base else {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            r = run_tree(tree, args.updates, args.threads)
            runs[name].append(r)
            print(
                f"round {round_ + 1} {name:>9}: step {r['step_time']:.2f} s wall, "
                f"{r['step_cpu_time']:.2f} s CPU, rollout {r['rollout_time']:.2f} s",
                flush=True,
            )
    medians = {name: summary(rs) for name, rs in runs.items()}
    print(f"medians over {args.rounds} rounds ({args.threads} thread(s), {platform.machine()}):")
    for name, m in medians.items():
        print(f"  {name:>9}: " + ", ".join(f"{k} {v:.3f} s" for k, v in m.items()))
    if "base" in medians:
        ratios = {k: medians["this tree"][k] / medians["base"][k] for k in medians["base"]}
        print("  this tree / base: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"rounds": args.rounds, "updates": args.updates, "threads": args.threads}
    args.json.write_text(json.dumps({"meta": meta, "medians": medians, "runs": runs}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
