"""Start-up time of the listing commands ``mmrl plugins`` and ``mmrl tasks`` (median of runs).

    python benchmarks/cli_startup.py [--reps 15] [--baseline DIR]

Each repetition runs every command once in a fresh interpreter (``python -m mmrl_harness ...``)
and records its wall time and its CPU time (user + system of the child process, which on a busy
machine excludes the time spent waiting for a core). Commands are interleaved, so a busier moment
of the machine hits each alike; the medians are printed.

``--baseline DIR`` compares side by side with another source tree of the harness (e.g.
``git archive <commit> | tar -x -C DIR``): both trees are then imported from source by the same
launcher (bypassing the editable install; entry points still come from the installed metadata),
interleaved within each repetition, and the table adds the paired ratio new / baseline.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [["plugins"], ["tasks"]]
#: Imports the harness from a given source tree, ahead of an editable install of another one,
#: and runs it as ``python -m mmrl_harness`` does (that tree's own ``__main__``).
LAUNCHER = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if not getattr(f, '__module__', '').startswith('__editable__')]; "
    "sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('mmrl_harness', run_name='__main__', alter_sys=True)"
)


def run_once(argv: list[str]) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one run of ``argv`` (output discarded; failure raises)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        argv, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "120"}
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def variants(baseline: Path | None) -> dict[str, list[str]]:
    """Label -> interpreter prefix for each tree that is timed."""
    if baseline is None:
        return {"installed": [sys.executable, "-m", "mmrl_harness"]}
    here = Path(__file__).resolve().parent.parent
    return {
        "this tree": [sys.executable, "-c", LAUNCHER, str(here)],
        "baseline": [sys.executable, "-c", LAUNCHER, str(baseline.resolve())],
    }


def main() -> None:
    """Parse arguments, time the commands interleaved, print medians (and ratios)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="runs of each command")
    parser.add_argument("--baseline", type=Path, help="another source tree to compare with")
    args = parser.parse_args()
    trees = variants(args.baseline)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {
        (t, " ".join(c)): [] for t in trees for c in COMMANDS
    }
    for command in COMMANDS:  # warm the file cache first
        for prefix in trees.values():
            run_once([*prefix, *command])
    for rep in range(args.reps):
        order = [(t, c) for c in COMMANDS for t in trees]
        shift = rep % len(order)
        for tree, command in order[shift:] + order[:shift]:
            times[(tree, " ".join(command))].append(run_once([*trees[tree], *command]))
    print(f"{sys.version.split()[0]}, {args.reps} runs each, medians")
    print("\n| command | tree | wall (s) | CPU (s) | CPU vs baseline |")
    print("|---|---|---:|---:|---:|")
    for (tree, command), runs in times.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        ratio = ""
        if args.baseline is not None:
            base = times[("baseline", command)]
            ratio = (
                f"{statistics.median(r[1] / b[1] for r, b in zip(runs, base, strict=True)):.2f}x"
            )
        print(f"| mmrl {command} | {tree} | {wall:.3f} | {cpu:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
