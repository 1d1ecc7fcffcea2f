"""Schema 1.2 measurements: episode length against the optimum, perturbation robustness, cost,
and the training summary of an evaluated checkpoint; each recomputed by ``mmrl verify``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from mmrl_harness.envs.perturb import PERTURBATIONS, PerturbationError, parse_perturbation
from mmrl_harness.evaluate import evaluate, resolve_task
from mmrl_harness.metrics import compute_task_metrics
from mmrl_harness.results import EpisodeRecord, EvalResults, document_digest, records_digest
from mmrl_harness.tasks import make_task_env
from mmrl_harness.train.summary import curve_stability
from mmrl_harness.verify import verify_file

if TYPE_CHECKING:
    from mmrl_harness.models.loading import LoadedVLM

DATA = Path(__file__).parent / "data"
SHORT = {"env_kwargs.image_size": 32, "max_steps": 4}


def _record(length: int, success: bool, optimal: int | None, index: int = 0) -> EpisodeRecord:
    return EpisodeRecord(
        task="t",
        seed=index,
        episode_index=index,
        actions=["a"] * length,
        responses=["a"] * length,
        rewards=[0.0] * length,
        episode_return=0.0,
        length=length,
        success=success,
        invalid_actions=0,
        tokens=length,
        wall_time_s=0.0,
        optimal_length=optimal,
    )


# -- episode length ------------------------------------------------------------------------------
def test_steps_to_success_and_length_ratio_match_hand_computed_values() -> None:
    records = [
        _record(2, True, 1, 0),  # ratio 2/1
        _record(4, True, 2, 1),  # ratio 4/2
        _record(3, True, None, 2),  # a success without a known optimum: length only
        _record(9, False, 3, 3),  # failures count in neither
    ]
    metrics = compute_task_metrics(records)
    # (2 + 4 + 3) / 3 and (2 + 2) / 2: small integers and halves, exact in binary.
    assert metrics["steps_to_success"].value == 3.0
    assert metrics["length_ratio_to_optimal"].value == 2.0
    # Both ratios equal, so every bootstrap resample has mean 2: a zero-width interval.
    assert (
        metrics["length_ratio_to_optimal"].ci_low,
        metrics["length_ratio_to_optimal"].ci_high,
    ) == (2.0, 2.0)
    assert metrics["steps_to_success"].higher_is_better is False


def test_without_successes_the_length_metrics_are_absent() -> None:
    metrics = compute_task_metrics([_record(4, False, 2)])
    assert "steps_to_success" not in metrics and "length_ratio_to_optimal" not in metrics


def test_numberline_reports_its_optimal_length_at_reset() -> None:
    env = make_task_env(resolve_task("numberline", SHORT))
    env.reset(seed=10000)
    unwrapped = env.env.unwrapped
    assert env.optimal_length == abs(unwrapped.target - unwrapped.position) >= 1


def test_fixed_policy_dispersion_is_the_iqr_of_returns_when_sampling() -> None:
    records = [
        _record(1, True, None, i).model_copy(update={"episode_return": float(r)})
        for i, r in enumerate([0, 1, 2, 3])
    ]
    # np.percentile([0, 1, 2, 3], [25, 75]) = [0.75, 2.25] (linear interpolation): IQR 1.5.
    assert compute_task_metrics(records, sampled=True)["fixed_policy_dispersion"].value == 1.5
    assert "fixed_policy_dispersion" not in compute_task_metrics(records)


# -- perturbations -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_each_perturbation_is_deterministic_and_leaves_the_clean_observation_alone(
    name: str,
) -> None:
    env = make_task_env(resolve_task("numberline", SHORT))
    clean = env.reset(seed=10001)
    image, text = clean.image.copy(), clean.text
    perturbation = parse_perturbation(name)
    first = perturbation.apply(clean, seed=10001)
    again = perturbation.apply(clean, seed=10001)
    assert np.array_equal(clean.image, image) and clean.text == text  # input untouched
    assert np.array_equal(first.image, again.image) and first.text == again.text
    assert first.image.shape == image.shape and first.image.dtype == np.uint8
    if perturbation.image is not None:
        assert not np.array_equal(first.image, image) and first.text == text
    else:
        assert np.array_equal(first.image, image) and first.text != text


def test_perturbation_names_and_levels_are_checked() -> None:
    assert parse_perturbation("blur").key == "blur:1.0"
    assert parse_perturbation("resolution:8").key == "resolution:8"
    assert parse_perturbation("gaussian_noise:0.25").key == "gaussian_noise:0.25"
    assert parse_perturbation("paraphrase").key == "paraphrase"
    for bad in ("blurr", "blur:x", "blur:-1", "paraphrase:2", "resolution:0", "resolution:8.5"):
        with pytest.raises(PerturbationError):
            parse_perturbation(bad)


def test_paraphrase_rewords_the_numberline_prompt() -> None:
    env = make_task_env(resolve_task("numberline", SHORT))
    text = parse_perturbation("paraphrase").apply(env.reset(seed=3), seed=3).text
    assert "what is your action ?" not in text and "marker" in text


# -- a real evaluation with perturbations --------------------------------------------------------
@pytest.fixture(scope="module")
def perturbed(tiny_llava: LoadedVLM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("perturb") / "results.json"
    evaluate(
        tiny_llava,
        [resolve_task("numberline", SHORT)],
        episodes=4,
        batch_size=4,
        policy_mode="action_logits",
        perturb=["gaussian_noise:0.2", "distractor_text"],
        price_per_hour=3.6,
        output=path,
    )
    return path


def test_a_perturbed_evaluation_writes_paired_robustness_that_verifies(perturbed: Path) -> None:
    assert verify_file(perturbed) == []
    results = EvalResults.model_validate_json(perturbed.read_text())
    task = results.tasks["numberline"]
    assert task.robustness is not None
    assert sorted(task.robustness) == ["distractor_text", "gaussian_noise:0.2"]
    clean = [r.success for r in task.records]
    for entry in task.robustness.values():
        assert [r.seed for r in entry.records] == [r.seed for r in task.records]
        shaken = [r.success for r in entry.records]
        assert entry.score.value == np.mean(shaken)
        assert entry.drop.value == np.mean(np.subtract(clean, shaken, dtype=float))
    assert all(r.optimal_length for r in task.records)
    cost = results.cost
    assert cost.cpu_time_s is not None and cost.cpu_time_s > 0
    assert cost.tokens_per_s is not None and cost.tokens_per_s > 0
    # 3.6 per hour is 0.001 per second; no training summary, so evaluation time only.
    assert cost.money == pytest.approx(cost.wall_time_s * 0.001, rel=1e-12)


def _rewrite(path: Path, tmp_path: Path, edit: Any) -> Path:
    raw = copy.deepcopy(json.loads(path.read_text()))
    edit(raw)
    results = EvalResults.model_validate(raw)
    raw["records_sha256"] = records_digest(results.tasks)
    raw["document_sha256"] = document_digest(EvalResults.model_validate(raw))
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(raw))
    return out


def test_a_tampered_robustness_score_fails_even_with_the_hashes_recomputed(
    perturbed: Path, tmp_path: Path
) -> None:
    def edit(raw: dict[str, Any]) -> None:
        score = raw["tasks"]["numberline"]["robustness"]["gaussian_noise:0.2"]["score"]
        score["value"] = 1.0 - score["value"] + 0.5

    fields = [p.field for p in verify_file(_rewrite(perturbed, tmp_path, edit))]
    assert fields == ["tasks.numberline.robustness.gaussian_noise:0.2.score.value"]


def test_tampered_money_fails(perturbed: Path, tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["cost"]["money"] *= 2

    assert [p.field for p in verify_file(_rewrite(perturbed, tmp_path, edit))] == ["cost.money"]


# -- older files ---------------------------------------------------------------------------------
def test_a_schema_1_1_file_still_verifies_and_dumps_unchanged() -> None:
    # Written by the 1.1 code (a sampled numberline run, so it also lacks the 1.2 metrics).
    path = DATA / "results_1.1_numberline.json"
    assert verify_file(path) == []
    raw = json.loads(path.read_text())
    results = EvalResults.model_validate(raw)
    assert raw["schema_version"] == "1.1" and results.training is None
    assert json.loads(results.model_dump_json()) == raw  # no 1.2 key appears on a round trip


# -- within-run stability of a training curve ----------------------------------------------------
def test_curve_stability_matches_hand_computed_values() -> None:
    curve = [(1, 0.0), (2, 1.0), (3, 0.2), (4, 0.1), (5, 0.3)]
    stability = curve_stability(curve)
    # differences 1, -0.8, -0.1, 0.2 -> sorted [-0.8, -0.1, 0.2, 1]; linear-interpolated
    # q25 = -0.8 + 0.75 * 0.7 = -0.275, q75 = 0.2 + 0.25 * 0.8 = 0.4: IQR 0.675.
    assert stability["dispersion_across_time"] == pytest.approx(0.675, abs=1e-12)
    # The 5 % quantile lies between -0.8 and -0.1; only -0.8 is at or below it.
    assert stability["short_term_risk"] == pytest.approx(-0.8, abs=1e-12)
    # Drawdowns 0, 0, 0.8, 0.9, 0.7; with 5 points only the deepest is in the 5 % tail.
    assert stability["max_drawdown"] == pytest.approx(0.9, abs=1e-12)
    assert stability["long_term_risk"] == pytest.approx(0.9, abs=1e-12)
    # The last 3 points all lie more than half the range (0.5) below the peak: collapsed.
    assert stability["collapsed"] == 1.0
    assert curve_stability([(1, 0.0), (2, 1.0), (3, 0.9)])["collapsed"] == 0.0
    assert curve_stability([(1, 0.5)]) == {}


# -- a real training run, evaluated from its checkpoint -----------------------------------------
def test_an_evaluated_checkpoint_carries_the_training_summary(tmp_path: Path) -> None:
    import torch

    from mmrl_harness.evaluate import run_eval
    from mmrl_harness.train import train
    from mmrl_harness.train.config import train_config_from_dict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the episodic tests: one thread is faster on shared CPUs
    try:
        config = train_config_from_dict(
            {
                "model": "tiny-llava",
                "task": "numberline",
                "task_overrides": {**SHORT, "env_kwargs.line_length": 3},
                "algorithm": "ppo",
                "output_dir": str(tmp_path / "run"),
                "per_device_batch_size": 8,
                "num_generations": 4,
                "max_steps": 3,
                "save_steps": 3,
                "eval": {"enabled": False},
                "episodic": {"rollout_steps": 8, "num_minibatches": 2, "eval_every": 0},
            }
        )
        result = train(config)
        out = tmp_path / "eval.json"
        run_eval(
            None,
            ["numberline"],
            checkpoint=str(result.last_checkpoint),
            task_overrides={**SHORT, "env_kwargs.line_length": 3},
            episodes=4,
            policy_mode="action_logits",
            price_per_hour=1.0,
            output=out,
        )
    finally:
        torch.set_num_threads(threads)
    assert verify_file(out) == []
    training = EvalResults.model_validate_json(out.read_text()).training
    assert training is not None
    assert (training.algorithm, training.steps, training.seed) == ("ppo", 3, 0)
    logged = [(int(h["step"]), float(h["reward"])) for h in result.log_history]
    assert training.curve == logged
    assert training.stability == curve_stability(logged)
    assert training.samples == sum(int(h["episodes"]) for h in result.log_history)
    assert 0 < training.trainable_params < (training.total_params or 0)
    assert training.cpu_time_s and training.cpu_time_s > 0
    assert training.flops_per_token and training.flops_per_token >= 2 * (training.total_params or 0)
    assert training.flops_per_step and training.flops_per_step > 0


def test_a_grpo_checkpoint_carries_the_curve_from_the_rank_summary(tmp_path: Path) -> None:
    import torch

    from mmrl_harness.train import train
    from mmrl_harness.train.config import train_config_from_dict
    from mmrl_harness.train.summary import training_summary

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(
            train_config_from_dict(
                {
                    "model": "tiny-llava",
                    "task": "color_shape",
                    "task_overrides": {"env_kwargs.image_size": 32},
                    "output_dir": str(tmp_path / "run"),
                    "max_steps": 2,
                    "per_device_batch_size": 8,
                    "num_generations": 4,
                    "max_new_tokens": 1,
                    "save_steps": 2,
                    "logging_steps": 1,
                    "eval": {"enabled": False},
                }
            )
        )
    finally:
        torch.set_num_threads(threads)
    # GRPO writes no metrics.jsonl: the curve comes from the rank summary train() wrote.
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    summary = training_summary(result.last_checkpoint)
    assert summary is not None and summary.algorithm == "grpo" and summary.steps == 2
    assert summary.curve == [(s, v) for s, v in result.metric_series("reward")]
    assert len(summary.curve) == 2 and set(summary.stability) >= {"dispersion_across_time"}
    assert summary.samples == 2 * 8  # updates x completions per update (one process)
