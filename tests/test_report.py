"""`mmrl report`: grouping runs, IQM ranking with CIs, the recommendation, Markdown/HTML, plots,
and the harness's Hugging Face `evaluate` metric modules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmrl_harness import evaluate_metrics
from mmrl_harness.cli import app
from mmrl_harness.experiments.collect import ReportInputError, collect
from mmrl_harness.experiments.plots import pareto_front
from mmrl_harness.experiments.report import build_report, write_report
from mmrl_harness.experiments.summary import summarise
from mmrl_harness.metrics import across_seeds, within_run
from mmrl_harness.metrics.cost import money
from mmrl_harness.metrics.episodes import bootstrap_ci, compute_task_metrics, length_histogram
from mmrl_harness.metrics.robustness import robustness_metrics
from mmrl_harness.results import (
    Cost,
    EpisodeRecord,
    EvalResults,
    FusionInfo,
    ModelInfo,
    Provenance,
    RobustnessResult,
    TaskResult,
    TrainingSummary,
    write_results,
)

TASK = "numberline"
EPISODES = 10


def episodes(successes: int) -> list[EpisodeRecord]:
    """``EPISODES`` NumberLine-like episodes (optimal length 2), the first ``successes`` won."""
    return [
        EpisodeRecord(
            task=TASK,
            seed=i,
            episode_index=i,
            actions=["right"] * (2 if i < successes else 4),
            responses=["right"] * (2 if i < successes else 4),
            rewards=[0.0, 1.0] if i < successes else [0.0, 0.0, 0.0, -1.0],
            episode_return=1.0 if i < successes else -1.0,
            length=2 if i < successes else 4,
            success=i < successes,
            invalid_actions=0,
            tokens=2 if i < successes else 4,
            wall_time_s=0.01,
            optimal_length=2,
        )
        for i in range(EPISODES)
    ]


def make_results(
    fusion: str,
    successes: int,
    wall_time_s: float,
    index: int,
    *,
    training: TrainingSummary | None = None,
    price_per_hour: float | None = None,
    perturbed_successes: int | None = None,
) -> EvalResults:
    """A results file whose metrics come from the real metric code (so the file verifies)."""
    records = episodes(successes)
    robustness = None
    if perturbed_successes is not None:
        perturbed = episodes(perturbed_successes)
        score, drop = robustness_metrics(records, perturbed)
        robustness = {"blur:1.0": RobustnessResult(score=score, drop=drop, records=perturbed)}
    task = TaskResult(
        task=TASK,
        task_version="1",
        task_hash="0" * 64,
        num_episodes=EPISODES,
        metrics=compute_task_metrics(records),
        length_histogram=length_histogram(records),
        records=records,
        robustness=robustness,
    )
    train_wall = training.wall_time_s if training else None
    return EvalResults(
        created_at=f"2026-01-01T00:00:{index:02d}Z",
        config={},
        provenance=Provenance(
            harness_version="0.1.0",
            model=ModelInfo(name_or_path="tiny-llava"),
            fusion=FusionInfo(name=fusion, trainable_params=1000),
            libraries={},
            plugins={},
            seeds=list(range(EPISODES)),
            hardware={},
        ),
        cost=Cost(
            wall_time_s=wall_time_s,
            tokens_generated=sum(r.tokens for r in records),
            episodes_per_s=EPISODES / wall_time_s,
            cpu_time_s=wall_time_s if training else None,
            price_per_hour=price_per_hour,
            money=None
            if price_per_hour is None
            else money(price_per_hour, wall_time_s, train_wall),
        ),
        tasks={TASK: task},
        training=training,
    )


def write_runs(folder: Path, fusion: str, successes: Sequence[int], wall_time_s: float) -> None:
    """One results file per run (files without a training summary are one run each)."""
    for index, count in enumerate(successes):
        write_results(
            make_results(fusion, count, wall_time_s, index), folder / fusion / f"run{index}.json"
        )


#: Successes out of 10 per run: the best (expensive), a close and cheaper one whose CI
#: overlaps it, and a cheap one far below.
RUNS = {
    "cross_attention": ([9, 10, 8, 9], 100.0),
    "concat": ([8, 9, 7, 9], 50.0),
    "weighted_sum": ([1, 2, 1, 2], 10.0),
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    for fusion, (successes, wall) in RUNS.items():
        write_runs(folder, fusion, successes, wall)
    # Not results files: the search must pass over them.
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    # The aggregate `mmrl sweep` writes, with one failed cell.
    failed = {"type": "RuntimeError", "message": "out of memory"}
    cells = [
        {"id": "concat-s0", "status": "done", "error": None},
        {"id": "mm_transformer-s0", "status": "failed", "error": failed},
    ]
    (folder / "sweep.json").write_text(json.dumps({"format": "mmrl-sweep/1", "cells": cells}))
    return folder


def test_runs_are_grouped_and_ranked_by_iqm(results_dir: Path) -> None:
    [summary] = summarise(collect([results_dir]))
    assert summary.task == TASK and summary.score == "success_rate"
    assert [row.label for row in summary.rows] == ["cross_attention", "concat", "weighted_sum"]
    for row in summary.rows:
        successes, _ = RUNS[row.label]
        assert sorted(row.scores) == sorted(s / EPISODES for s in successes)


def test_iqm_and_ci_equal_across_seeds_on_the_same_matrix(results_dir: Path) -> None:
    [summary] = summarise(collect([results_dir]))
    for row in summary.rows:
        matrix = np.array(row.scores).reshape(-1, 1)
        expected = across_seeds.aggregate_with_ci(across_seeds.iqm, matrix, seed=0)
        # The same function on the same matrix and seed: identical floats.
        assert (row.iqm.value, row.iqm.ci_low, row.iqm.ci_high) == (
            expected.value,
            expected.ci_low,
            expected.ci_high,
        )
    # IQM of [0.8, 0.9, 0.9, 1.0]: the middle two, (0.9 + 0.9) / 2.
    assert summary.rows[0].iqm.value == pytest.approx(0.9)
    # IQR across runs, q75 - q25 with linear interpolation: 0.925 - 0.875.
    assert summary.rows[0].iqr == pytest.approx(0.05)


def test_recommendation_is_the_cheapest_config_whose_ci_overlaps_the_best(
    results_dir: Path,
) -> None:
    [summary] = summarise(collect([results_dir]))
    rec = summary.recommendation
    best, concat, weak = summary.rows
    assert best.iqm.ci_low is not None and concat.iqm.ci_high is not None
    assert concat.iqm.ci_high >= best.iqm.ci_low  # the constructed case overlaps ...
    assert weak.iqm.ci_high is not None and weak.iqm.ci_high < best.iqm.ci_low  # ... and not
    assert summary.cost_measure == "wall_s"  # 1.1 files record no money or CPU time
    assert (rec.best.label, rec.cheapest.label) == ("cross_attention", "concat")


def test_markdown_and_html_hold_every_row_and_the_failed_cell(
    results_dir: Path, tmp_path: Path
) -> None:
    write_report(build_report([results_dir]), tmp_path, plot_formats=["svg"])
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | cross_attention | 4 | 0.900 [" in md
    assert "| 3 | weighted_sum | 4 |" in md
    assert "cheapest whose CI overlaps it: concat" in md
    assert "| mm_transformer-s0 | RuntimeError: out of memory |" in md
    assert "concat-s0" not in md
    assert "![plots/iqm_numberline.svg](plots/iqm_numberline.svg)" in md
    page = (tmp_path / "report.html").read_text()
    assert "<td>cross_attention</td>" in page and "<td>weighted_sum</td>" in page
    assert page.count("<svg") == 3  # iqm, pareto, profile (no curves or robustness in 1.1)
    assert 'src="http' not in page and "<link" not in page  # self-contained


def test_reports_and_plots_are_byte_identical_across_runs(
    results_dir: Path, tmp_path: Path
) -> None:
    first = write_report(build_report([results_dir]), tmp_path / "a")
    second = write_report(build_report([results_dir]), tmp_path / "b")
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in first)
    assert names == sorted(p.relative_to(tmp_path / "b").as_posix() for p in second)
    assert {"plots/iqm_numberline.png", "plots/pareto_numberline.svg"} <= set(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_pareto_front_drops_dominated_points() -> None:
    # (cost, score): the second is dominated by the first (dearer and worse).
    points = [(10.0, 0.5), (20.0, 0.4), (30.0, 0.9), (5.0, 0.1)]
    assert pareto_front(points) == [3, 0, 2]
    # A lower-is-better score (a leaderboard ranked by, e.g., episode length): the cheapest point
    # has the best score too and dominates every other one.
    assert pareto_front(points, higher_is_better=False) == [3]


def test_missing_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match="does not exist"):
        collect([tmp_path / "nope"])
    with pytest.raises(ReportInputError, match="no results file found"):
        collect([tmp_path])


def training(seed: int, curve: list[float], dt: float) -> TrainingSummary:
    """A training summary of one seed (the fields `mmrl eval --checkpoint` fills from the log)."""
    return TrainingSummary(
        algorithm="ppo",
        seed=seed,
        steps=len(curve),
        samples=8 * len(curve),
        wall_time_s=60.0,
        cpu_time_s=110.0,
        peak_memory_mib=900.0,
        trainable_params=5000,
        flops_per_step=2.0e9,
        curve=list(enumerate(curve)),
        stability={"dispersion_across_time": dt, "collapsed": float(seed == 2)},
    )


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two adapters x 3 training seeds, with training summaries, money and a perturbation."""
    folder = tmp_path_factory.mktemp("trained")
    for fusion, base in (("concat", 6), ("cross_attention", 8)):
        for seed in range(3):
            curve = [0.1 * base * step / 4 + 0.05 * seed for step in range(5)]
            results = make_results(
                fusion,
                base + seed % 2,
                20.0,
                seed,
                training=training(seed, curve, dt=0.1 * (seed + 1)),
                price_per_hour=3.6,
                perturbed_successes=base - 3,
            )
            write_results(results, folder / f"{fusion}-s{seed}.json")
    return folder


def test_training_seeds_are_the_runs_and_within_run_stability_is_their_mean(
    trained_dir: Path,
) -> None:
    [summary] = summarise(collect([trained_dir]))
    assert [(r.label, len(r.scores)) for r in summary.rows] == [
        ("cross_attention", 3),
        ("concat", 3),
    ]
    best = summary.rows[0]
    # Mean over seeds of DT 0.1, 0.2, 0.3, and one of three runs collapsed.
    assert best.within_run["dispersion_across_time"] == pytest.approx(0.2)
    assert best.within_run["collapsed"] == pytest.approx(1 / 3)
    # Every successful episode took the optimal 2 steps.
    assert (best.steps_to_success, best.length_ratio) == (2.0, 1.0)
    assert (best.train_cpu_s, best.flops_per_step, best.trainable_params) == (110.0, 2.0e9, 5000)
    # 3.6 per hour over 20 s of evaluation and 60 s of training: 0.08.
    assert summary.cost_measure == "money" and best.money == pytest.approx(0.08)
    # Clean 8 or 9 successes, perturbed 5: drops 0.3, 0.4, 0.3.
    assert best.robustness == {"blur:1.0": pytest.approx(1 / 3)}
    assert len(best.curves) == 3 and best.curves[0][0] == (0.0, 0.0)


def test_curves_and_robustness_are_plotted_and_tabulated(trained_dir: Path, tmp_path: Path) -> None:
    written = write_report(build_report([trained_dir]), tmp_path, plot_formats=["svg"])
    names = {p.name for p in written}
    assert {"curves_numberline.svg", "robustness_numberline.svg"} <= names
    md = (tmp_path / "report.md").read_text()
    assert "| adapter | blur:1.0 |" in md and "| cross_attention | 0.333 |" in md
    assert "| 1 | cross_attention | 3 |" in md


def test_the_same_training_seed_twice_is_refused(trained_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.json"
    copy.write_bytes((trained_dir / "concat-s1.json").read_bytes())
    with pytest.raises(ReportInputError, match="both training seed 1 of concat"):
        collect([trained_dir, copy])


def test_a_curve_comes_from_the_run_folders_log_without_a_training_summary(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    rows = [{"step": 2 * i, "reward": 0.25 * i, "loss": 1.0} for i in range(3)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    results = make_results("concat", 5, 10.0, 0)
    results.provenance.fusion.checkpoint = str(run / "checkpoint-4")
    write_results(results, tmp_path / "results" / "eval.json")
    [summary] = summarise(collect([tmp_path / "results"]))
    assert summary.rows[0].curves == [[(0.0, 0.0), (2.0, 0.25), (4.0, 0.5)]]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real `mmrl eval` runs of the tiny model, one per adapter."""
    folder = tmp_path_factory.mktemp("evaluated")
    for fusion in ("concat", "weighted_sum"):
        args = ["eval", "--model", "tiny-llava", "--task", "counting", "--episodes", "3"]
        args += ["--override", "env_kwargs.image_size=32", "--fusion", fusion]
        result = CliRunner().invoke(app, [*args, "-o", str(folder / f"{fusion}.json")])
        assert result.exit_code == 0, result.output
    return folder


def test_cli_report_on_real_evaluations(evaluated: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", str(evaluated), "--out", str(tmp_path), "--plots", "png"]
    )
    assert result.exit_code == 0, result.output
    assert "counting" in result.output and "best:" in result.output
    md = (tmp_path / "report.md").read_text()
    assert "| concat |" in md and "| weighted_sum |" in md
    assert (tmp_path / "plots" / "iqm_counting.png").stat().st_size > 0
    assert not (tmp_path / "plots" / "iqm_counting.svg").exists()


def test_cli_report_rejects_an_unknown_format(evaluated: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(evaluated), "--format", "pdf"])
    assert result.exit_code == 1
    assert "unknown format" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def load_metric(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``evaluate.load`` of a shipped module by name. The module cache (where evaluate copies
    the script to import it) is one temporary folder for the whole module: evaluate imports it
    as the package ``evaluate_modules``, which Python caches on first import."""
    import evaluate

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path_factory.mktemp("modules"))
        yield load


def load(name: str):  # type: ignore[no-untyped-def]
    """A shipped metric module through ``evaluate.load`` on its local path (no Hub)."""
    import evaluate

    return evaluate.load(evaluate_metrics.path(name), keep_in_memory=True)


def test_evaluate_success_rate_equals_the_results_file_metric(load_metric) -> None:  # type: ignore[no-untyped-def]
    successes = [1, 0, 1, 1, 0, 1, 1, 1]
    out = load_metric("success_rate").compute(predictions=successes)
    low, high = bootstrap_ci([float(s) for s in successes])
    # The same bootstrap code on the same values and seed: identical floats.
    assert out == {"success_rate": 0.75, "ci_low": low, "ci_high": high}


def test_evaluate_iqm_equals_across_seeds(load_metric) -> None:  # type: ignore[no-untyped-def]
    scores = np.random.default_rng(3).uniform(size=(5, 2))
    out = load_metric("iqm").compute(predictions=scores.tolist())
    expected = across_seeds.aggregate_with_ci(across_seeds.iqm, scores, seed=0)
    # The metric receives the rows back from an Arrow float64 column: the same doubles.
    assert (out["iqm"], out["ci_low"], out["ci_high"]) == (
        expected.value,
        expected.ci_low,
        expected.ci_high,
    )
    assert out["optimality_gap"] == across_seeds.optimality_gap(scores)


def test_evaluate_within_run_stability_equals_within_run(load_metric) -> None:  # type: ignore[no-untyped-def]
    curve = [0.10, 0.22, 0.35, 0.31, 0.48, 0.52, 0.20, 0.18, 0.15, 0.16]
    out = load_metric("within_run_stability").compute(predictions=curve)
    assert out["dispersion_across_time"] == within_run.dispersion_across_time(curve)
    assert out["short_term_risk"] == within_run.short_term_risk(curve)
    # Peak 0.52, trough 0.15 (docs/experiments.md's example curve).
    assert out["max_drawdown"] == pytest.approx(0.37)


def test_unknown_metric_module_names_the_shipped_ones() -> None:
    with pytest.raises(KeyError, match="iqm"):
        evaluate_metrics.path("accuracy")
