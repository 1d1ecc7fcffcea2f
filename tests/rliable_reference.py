"""rliable's own numbers on the test score matrices, for tests/test_stability.py.

``rliable.library`` (the stratified-bootstrap intervals and performance profiles) needs arch 7,
which does not import under pandas 3, so it cannot run in the project's test environment. This
script records its outputs once, in a separate environment, into
tests/data/rliable_1.2.0_reference.json:

    python3 -m venv /tmp/rliable-env && . /tmp/rliable-env/bin/activate
    pip install rliable==1.2.0 arch==7.2.0 pandas==2.3.3
    python tests/rliable_reference.py

rliable draws its bootstrap indices from numpy's global RandomState (``np.random.choice``), so
each interval is computed right after ``np.random.seed(seed)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).parent / "data" / "rliable_1.2.0_reference.json"
TAUS = [-0.25, 0.0, 0.25, 0.5, 0.6, 0.75, 1.0, 1.25]
REPS = 400


def score_matrices() -> dict[str, np.ndarray]:
    """The generated (runs x tasks) matrices both sides use: continuous, tied and one-task."""
    rng = np.random.default_rng(2021)
    return {
        "x": rng.normal(0.6, 0.3, size=(10, 5)),
        "y": rng.normal(0.5, 0.3, size=(7, 5)),
        # Scores on a 0.1 grid, so ties occur (probability of improvement counts them 1/2).
        "tied": np.round(rng.uniform(0.0, 1.0, size=(6, 5)), 1),
        "one_task": rng.uniform(0.0, 1.2, size=(5, 1)),
    }


def main() -> None:
    """Write rliable's intervals and profiles for every matrix to OUTPUT."""
    from rliable import library, metrics

    aggregates = {
        "iqm": metrics.aggregate_iqm,
        "mean": metrics.aggregate_mean,
        "median": metrics.aggregate_median,
        "optimality_gap": metrics.aggregate_optimality_gap,
    }
    matrices = score_matrices()
    out: dict[str, dict[str, list[float]]] = {}
    for name, scores in matrices.items():
        for agg, func in aggregates.items():
            np.random.seed(11)
            _, ci = library.get_interval_estimates(
                {name: scores}, lambda s, f=func: np.array([f(s)]), reps=REPS
            )
            out.setdefault(name, {})[f"{agg}_ci"] = ci[name][:, 0].tolist()
        for flag in (True, False):
            np.random.seed(12)
            profile, profile_ci = library.create_performance_profile(
                {name: scores}, TAUS, use_score_distribution=flag, reps=REPS
            )
            key = "run_profile" if flag else "mean_profile"
            out[name][key] = profile[name].tolist()
            out[name][f"{key}_ci"] = profile_ci[name].tolist()
    np.random.seed(13)
    _, ci = library.get_interval_estimates(
        {"x_vs_y": [matrices["x"], matrices["y"]]},
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=REPS,
    )
    out["x_vs_y"] = {"probability_of_improvement_ci": ci["x_vs_y"][:, 0].tolist()}
    OUTPUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
