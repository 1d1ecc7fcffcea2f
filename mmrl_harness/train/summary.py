"""The training summary of a results file: what training a checkpoint cost and how stably it
learned, recorded at training time and read back when ``mmrl eval --checkpoint`` evaluates it.

At the end of a run ``train`` adds :func:`cost_record` (CPU seconds, parameter counts, samples,
tokens, FLOP estimates, the reward curve) to ``ranks/rank-<rank>.json``, beside the wall time
and peak memory that file already held. :func:`training_summary` finds a checkpoint's run folder
(the checkpoint folder itself, or its parent), reads that file, the episodic trainers'
``metrics.jsonl`` and the manifest, and builds a ``TrainingSummary`` whose ``stability`` is
Chan et al.'s within-run metrics of the reward curve (:func:`curve_stability`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrl_harness.metrics.within_run import (
    dispersion_across_time,
    long_term_risk,
    max_drawdown,
    reward_collapse_start,
    short_term_risk,
)
from mmrl_harness.results_schema import TrainingSummary

if TYPE_CHECKING:
    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.policy import PolicyModel
    from mmrl_harness.train.result import TrainResult

RANK_SUMMARY = Path("ranks") / "rank-0.json"
METRICS_LOG = "metrics.jsonl"
#: A run "collapsed" when its last COLLAPSE_PATIENCE logged rewards all lie more than
#: COLLAPSE_FRACTION of the curve's range below the peak reached before them.
COLLAPSE_FRACTION = 0.5
COLLAPSE_PATIENCE = 3


def _flops_per_token(policy: PolicyModel, total: int) -> float:
    """Forward FLOPs per sequence position: ``2 x parameters`` (the dense-transformer estimate
    of Kaplan et al., 2020) plus what the fusion adapter adds per position (its cost report)."""
    model = policy.loaded.model
    image_tokens = int(getattr(model.config, "image_seq_length", 0) or 0)
    cost = policy.fusion_adapter.cost(model, image_tokens, 1)
    return 2.0 * total + float(cost.flops_per_token)


def cost_record(config: TrainConfig, policy: PolicyModel, result: TrainResult) -> dict[str, Any]:
    """What ``train`` adds to the rank summary: ``cpu_time_s``, ``trainable_params``,
    ``total_params``, ``samples``, ``tokens``, ``flops_per_token``, ``flops_per_step`` and
    ``reward_curve`` (``[step, reward]`` rows as logged)."""
    total = sum(p.numel() for p in policy.peft_model.parameters())
    rows = result.log_history
    if any("episodes" in row for row in rows):  # episodic: per-update counts
        samples = sum(int(row.get("episodes", 0)) for row in rows)
        tokens = sum(float(row.get("num_tokens", 0.0)) for row in rows)
    else:  # grpo: completions per update from the config; TRL logs cumulative num_tokens
        samples = (
            result.global_step
            * config.per_device_batch_size
            * config.gradient_accumulation_steps
            * result.world_size
        )
        tokens = max((float(row.get("num_tokens", 0.0)) for row in rows), default=0.0)
    per_token = _flops_per_token(policy, total)
    steps = max(result.global_step, 1)
    return {
        "cpu_time_s": result.train_cpu_seconds,
        "trainable_params": policy.trainable_parameters(),
        "total_params": total,
        "samples": samples,
        "tokens": tokens,
        "flops_per_token": per_token,
        # forward + backward (about twice the forward) over the positions trained per update.
        "flops_per_step": 3.0 * per_token * tokens / steps if tokens else None,
        "reward_curve": [[step, value] for step, value in result.metric_series("reward")],
    }


def curve_stability(curve: Sequence[tuple[int, float]]) -> dict[str, float]:
    """Within-run stability of a ``(step, reward)`` curve: ``dispersion_across_time``,
    ``short_term_risk``, ``long_term_risk``, ``max_drawdown`` (as ``run_stability`` computes
    them from a log) and ``collapsed`` (1.0 when the reward collapsed and never recovered, see
    COLLAPSE_FRACTION). Empty for fewer than 2 points, or steps that do not increase."""
    steps = [float(s) for s, _ in curve]
    values = [float(v) for _, v in curve]
    if len(values) < 2 or any(b <= a for a, b in itertools.pairwise(steps)):
        return {}
    drop = COLLAPSE_FRACTION * (max(values) - min(values))
    patience = min(COLLAPSE_PATIENCE, len(values))
    collapsed = reward_collapse_start(values, drop=drop, patience=patience) is not None
    return {
        "dispersion_across_time": dispersion_across_time(values, steps),
        "short_term_risk": short_term_risk(values, steps),
        "long_term_risk": long_term_risk(values),
        "max_drawdown": max_drawdown(values),
        "collapsed": float(collapsed),
    }


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _curve(run: Path, rank: dict[str, Any], upto: int) -> list[tuple[int, float]]:
    """The reward curve up to the checkpoint's step: the episodic log, else the rank summary."""
    log = run / METRICS_LOG
    if log.is_file():
        rows = [
            (int(r["step"]), float(r["reward"])) for r in _read_json_lines(log) if "reward" in r
        ]
    else:
        rows = [(int(s), float(v)) for s, v in rank.get("reward_curve", [])]
    return [(step, value) for step, value in rows if step <= upto]


def training_summary(checkpoint: str | Path) -> TrainingSummary | None:
    """The summary of the run that wrote ``checkpoint``, or None when its run folder has no
    rank summary with the cost record (a run from before schema 1.2, or copied without it)."""
    from mmrl_harness.train.manifest import read_manifest

    folder = Path(checkpoint)
    run = next((d for d in (folder, folder.parent) if (d / RANK_SUMMARY).is_file()), None)
    if run is None:
        return None
    rank = json.loads((run / RANK_SUMMARY).read_text(encoding="utf-8"))
    if "trainable_params" not in rank:
        return None
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    curve = _curve(run, rank, manifest.step)
    return TrainingSummary(
        algorithm=manifest.algorithm,
        seed=int(manifest.config.get("seed", 0)),
        steps=manifest.step,
        samples=int(rank["samples"]),
        wall_time_s=float(rank["train_seconds"]),
        cpu_time_s=rank.get("cpu_time_s"),
        peak_memory_mib=rank.get("peak_memory_mib"),
        trainable_params=int(rank["trainable_params"]),
        total_params=rank.get("total_params"),
        flops_per_step=rank.get("flops_per_step"),
        flops_per_token=rank.get("flops_per_token"),
        curve=curve,
        stability=curve_stability(curve),
    )
