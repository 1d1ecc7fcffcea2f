"""PPO on NumberLine, as shipped in ``examples/ppo_numberline_tiny.yaml``, over several seeds.

    python benchmarks/ppo_numberline_seeds.py [--seeds 0 1 2] [--jobs 1] [--set KEY=VALUE ...]

Trains the example config unchanged apart from ``seed``, ``output_dir`` and ``use_cpu`` (and any
``--set`` overrides, dotted keys into the YAML, values parsed as YAML: ``--set
learning_rate=1e-3 --set episodic.ent_coef=0``), one torch thread per run. Prints, per seed, the
greedy success of every in-training evaluation (the example evaluates every 2 updates on the
task's first 32 evaluation seeds), its minimum over the last third of training (updates after
``2/3 * max_steps``: the plateau the example must hold) and the run's wall-clock and CPU seconds
(this process's CPU time, evaluations included; on a shared machine the wall clock also counts
the time other processes held the cores). ``--jobs N`` runs N seeds at once in separate processes;
each run's CPU seconds stay its own. Writes ``benchmarks/results/ppo_numberline_seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/ppo_numberline_tiny.yaml"


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = value


def run_seed(seed: int, overrides: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Train the example with ``seed``; its evaluation curve and timings."""
    import torch

    from mmrl_harness.train.config import train_config_from_dict
    from mmrl_harness.train.episodic.trainer import train_episodic
    from mmrl_harness.train.policy import build_policy

    torch.set_num_threads(1)
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(seed=seed, output_dir=str(Path(workdir) / f"seed-{seed}"), use_cpu=True)
    for key, value in overrides.items():
        _set(data, key, value)
    config = train_config_from_dict(data)
    wall, cpu = time.perf_counter(), time.process_time()
    result = train_episodic(config, build_policy(config))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    curve = [(int(e["step"]), float(e["success_rate"])) for e in result.evaluations]
    last_third = [s for step, s in curve if step > 2 * config.max_steps / 3]
    return {
        "seed": seed,
        "curve": curve,
        "last_third_min": min(last_third) if last_third else None,
        "best": max(s for _, s in curve),
        "wall_s": wall,
        "cpu_s": cpu,
        "train_cpu_s": sum(row["step_cpu_time"] for row in result.log_history),
    }


def main() -> None:
    """Run the seeds, print one block per seed and a summary line, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks/results/ppo_numberline_seeds.json"
    )
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    print(f"{EXAMPLE.name} overrides {overrides or 'none'}; {platform.machine()}, 1 thread/run")
    with tempfile.TemporaryDirectory() as workdir, ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_seed, s, overrides, workdir) for s in args.seeds]
        runs = [f.result() for f in futures]
    for r in runs:
        curve = " ".join(f"{step}:{s:.2f}" for step, s in r["curve"])
        print(f"seed {r['seed']}: greedy success by update  {curve}")
        print(
            f"  last-third min {r['last_third_min']:.3f}, best {r['best']:.3f}; "
            f"{r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU s ({r['train_cpu_s']:.0f} in updates)"
        )
    held = sum(r["last_third_min"] is not None and r["last_third_min"] >= 0.95 for r in runs)
    print(f"last-third min >= 0.95 in {held} of {len(runs)} seeds")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"example": EXAMPLE.name, "overrides": overrides, "jobs": args.jobs, "threads": 1}
    args.json.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
