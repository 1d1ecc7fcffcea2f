"""Evaluate a policy on tasks: episodes -> records -> metrics -> a results file.

``evaluate`` takes an already loaded model (what trainers call at the end of a run);
``run_eval`` loads the model and attaches the fusion adapter first (what ``mmrl eval`` calls).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrl_harness import __version__
from mmrl_harness.errors import InputError
from mmrl_harness.metrics import compute_task_metrics, length_histogram
from mmrl_harness.metrics.cost import money, peak_memory_mib, tokens_per_s
from mmrl_harness.metrics.episodes import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from mmrl_harness.metrics.robustness import robustness_metrics
from mmrl_harness.results import (
    Bootstrap,
    Cost,
    EpisodeRecord,
    EvalResults,
    FusionInfo,
    ModelInfo,
    Provenance,
    RobustnessResult,
    TaskResult,
    TrainingSummary,
    git_sha,
    hardware_info,
    json_digest,
    library_versions,
    now_utc,
    write_results,
)
from mmrl_harness.rollout import PolicyMode, VLMPolicy, run_episodes

if TYPE_CHECKING:
    from rich.progress import Progress
    from torch import nn

    from mmrl_harness.envs.perturb import Perturbation
    from mmrl_harness.fusion.base import FusionAdapter
    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.tasks.schema import TaskDefinition


def resolve_task(
    task: str | TaskDefinition,
    overrides: Mapping[str, Any] | None = None,
    *,
    allow_env_imports: bool = False,
) -> TaskDefinition:
    """A task definition from a name, a YAML path or a definition, with overrides applied.

    ``allow_env_imports`` lets a ``module:Id`` env import its module, which runs its code.
    """
    from mmrl_harness.tasks import get_task, with_overrides

    if isinstance(task, str):
        definition = get_task(task, allow_env_imports=allow_env_imports)
    else:
        definition = task
    return with_overrides(definition, overrides) if overrides else definition


def resolve_seeds(
    task: TaskDefinition, episodes: int | None = None, seeds: Sequence[int] | None = None
) -> list[int]:
    """Explicit seeds, else the task's evaluation seeds, cut to ``episodes`` (or extended)."""
    chosen = list(seeds) if seeds else task.eval_seeds.seeds()
    if episodes is None:
        return chosen
    if episodes < 1:
        raise InputError(f"episodes must be >= 1, got {episodes}")
    if episodes > len(chosen):  # continue the range past the last seed
        chosen += list(range(max(chosen) + 1, max(chosen) + 1 + episodes - len(chosen)))
    return chosen[:episodes]


def evaluate(
    loaded: LoadedVLM,
    tasks: Sequence[str | TaskDefinition],
    *,
    fusion: FusionInfo | None = None,
    episodes: int | None = None,
    seeds: Sequence[int] | None = None,
    policy_mode: PolicyMode = "generate",
    do_sample: bool = False,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    batch_size: int = 16,
    task_overrides: Mapping[str, Any] | None = None,
    output: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    perturb: Sequence[str] = (),
    price_per_hour: float | None = None,
    training: TrainingSummary | None = None,
) -> EvalResults:
    """Run every task's episodes with ``loaded`` as the policy and return (and write) the results.

    ``perturb``: perturbation specs (``NAME[:LEVEL]``, see ``mmrl_harness.envs.perturb``); each
    task runs again under each, on the same seeds, into ``TaskResult.robustness``.
    ``price_per_hour``: the machine's price, for ``cost.money`` (evaluation plus ``training``
    wall time). ``training``: the summary of the run that produced the weights, stored as is.
    """
    from mmrl_harness.envs.perturb import parse_perturbation

    if not tasks:
        raise ValueError("evaluate needs at least one task name")
    if price_per_hour is not None and not price_per_hour >= 0:
        raise InputError(f"price_per_hour must be >= 0, got {price_per_hour}; give e.g. 2.5")
    perturbations = [parse_perturbation(spec) for spec in perturb]
    definitions = [resolve_task(t, task_overrides) for t in tasks]
    policy = VLMPolicy(
        loaded,
        mode=policy_mode,
        do_sample=do_sample,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
    )
    was_training = loaded.model.training
    loaded.model.eval()
    bootstrap = Bootstrap(seed=BOOTSTRAP_SEED, resamples=BOOTSTRAP_RESAMPLES)
    started, cpu_started = time.perf_counter(), time.process_time()
    results: dict[str, TaskResult] = {}
    all_seeds: list[int] = []
    try:
        for task in definitions:
            task_seeds = resolve_seeds(task, episodes, seeds)
            all_seeds.extend(s for s in task_seeds if s not in all_seeds)
            run = _TaskRun(task, policy, task_seeds, batch_size, bootstrap, progress)
            results[task.name] = run.result(perturbations)
    finally:
        loaded.model.train(was_training)
    cost = _cost(results, time.perf_counter() - started, time.process_time() - cpu_started)
    if price_per_hour is not None:
        cost.price_per_hour = price_per_hour
        cost.money = money(
            price_per_hour, cost.wall_time_s, training.wall_time_s if training else None
        )
    run_config = dict(config or {})
    run_config.setdefault("policy_mode", policy_mode)
    run_config.setdefault("do_sample", do_sample)
    run_config.setdefault("max_new_tokens", max_new_tokens)
    run_config.setdefault("batch_size", batch_size)
    run_config.setdefault("tasks", [t.name for t in definitions])
    out = EvalResults(
        created_at=now_utc(),
        config=run_config,
        provenance=_provenance(loaded, fusion, all_seeds),
        cost=cost,
        tasks=results,
        training=training,
        bootstrap=bootstrap,
    )
    if output is not None:
        write_results(out, output)
    return out


def _cost(results: dict[str, TaskResult], wall: float, cpu: float) -> Cost:
    """The evaluation's cost; perturbed episodes count in time and tokens (they ran too)."""
    perturbed = [
        rec.tokens
        for r in results.values()
        for entry in (r.robustness or {}).values()
        for rec in entry.records
    ]
    clean = sum(rec.tokens for r in results.values() for rec in r.records)
    return Cost(
        wall_time_s=wall,
        tokens_generated=clean,
        episodes_per_s=sum(r.num_episodes for r in results.values()) / wall if wall > 0 else 0.0,
        peak_memory_mib=peak_memory_mib(),
        cpu_time_s=cpu,
        tokens_per_s=tokens_per_s(clean + sum(perturbed), wall),
    )


class _TaskRun:
    """One task's episodes (a progress bar advancing per episode), clean and perturbed."""

    def __init__(
        self,
        task: TaskDefinition,
        policy: VLMPolicy,
        seeds: list[int],
        batch_size: int,
        bootstrap: Bootstrap,
        progress: Progress | None,
    ) -> None:
        self.task, self.policy, self.seeds = task, policy, seeds
        self.batch_size, self.bootstrap, self.progress = batch_size, bootstrap, progress

    def _episodes(self, label: str, perturbation: Perturbation | None) -> list[EpisodeRecord]:
        from mmrl_harness.envs.perturb import PerturbedEnv
        from mmrl_harness.tasks import make_task_env

        progress = self.progress
        bar = progress.add_task(label, total=len(self.seeds)) if progress else None

        def advance(_record: Any) -> None:
            if progress is not None and bar is not None:
                progress.advance(bar)

        def make_env() -> Any:
            env = make_task_env(self.task)
            return env if perturbation is None else PerturbedEnv(env, perturbation)

        return run_episodes(
            make_env, self.policy, self.seeds, batch_size=self.batch_size, on_episode=advance
        )

    def result(self, perturbations: Sequence[Perturbation]) -> TaskResult:
        """The clean run's metrics, and one robustness entry per perturbation."""
        task, ci = self.task, {"seed": self.bootstrap.seed, "resamples": self.bootstrap.resamples}
        records = self._episodes(f"eval {task.name}", None)
        robustness: dict[str, RobustnessResult] = {}
        for perturbation in perturbations:
            perturbed = self._episodes(f"eval {task.name} ({perturbation.key})", perturbation)
            score, drop = robustness_metrics(records, perturbed, **ci)
            robustness[perturbation.key] = RobustnessResult(
                score=score, drop=drop, records=perturbed
            )
        return TaskResult(
            task=task.name,
            task_version=str(task.version),
            task_hash=json_digest(task.model_dump(mode="json")),
            num_episodes=len(records),
            metrics=compute_task_metrics(records, sampled=self.policy.do_sample, **ci),
            length_histogram=length_histogram(records),
            records=records,
            robustness=robustness or None,
        )


def run_eval(
    model: str | None,
    tasks: Sequence[str],
    *,
    fusion: str | None = None,
    fusion_options: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    revision: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    allow_env_imports: bool = False,
    **kwargs: Any,
) -> EvalResults:
    """Load ``model``, attach ``fusion`` (default ``concat``), load a fine-tuned ``checkpoint``
    if given, then ``evaluate``.

    Every input is checked first (output path, adapter, tasks, env ids, action maps), so a
    mistake fails before a possibly large model loads. ``allow_env_imports`` lets a task's
    ``module:Id`` env import its module, which runs its code. A checkpoint's manifest supplies
    the model and the fusion adapter it was trained with (``model`` and ``fusion`` may be None
    then; given, they must agree with it); see ``mmrl_harness.train.restore``. The checkpoint's
    run folder also supplies ``training`` (``mmrl_harness.train.summary``) when it has one.
    """
    from mmrl_harness.envs.perturb import parse_perturbation
    from mmrl_harness.preflight import check_eval_inputs

    overrides = kwargs.pop("task_overrides", None)
    definitions = [resolve_task(t, overrides, allow_env_imports=allow_env_imports) for t in tasks]
    check_eval_inputs(definitions, fusion, kwargs.get("output"))
    for spec in kwargs.get("perturb", ()):
        parse_perturbation(spec)  # a misspelt --perturb fails before the model loads
    # torch and transformers only now: the checks above take a second, these imports longer.
    from mmrl_harness.train.restore import load_for_eval

    loaded, adapter, setup = load_for_eval(
        checkpoint,
        model=model,
        revision=revision,
        fusion=fusion,
        fusion_options=fusion_options,
        dtype=dtype,
        device=device,
    )
    from mmrl_harness.train.summary import training_summary

    config = {"model": setup.model, "fusion": setup.fusion, "fusion_options": setup.fusion_options}
    if kwargs.get("perturb"):
        config["perturb"] = list(kwargs["perturb"])
    info = fusion_info(adapter, loaded.model, checkpoint)
    training = training_summary(checkpoint) if checkpoint else None
    return evaluate(loaded, definitions, fusion=info, config=config, training=training, **kwargs)


def fusion_info(
    adapter: FusionAdapter, model: nn.Module, checkpoint: str | None = None
) -> FusionInfo:
    """The results-file description of an attached adapter: name, options, the distribution and
    version of the plugin that provides it, its trainable parameters, the checkpoint loaded."""
    from mmrl_harness.registry import fusion_adapters

    info = fusion_adapters.infos().get(adapter.name)
    return FusionInfo(
        name=adapter.name,
        options=adapter.options.model_dump(mode="json"),
        distribution=info.distribution if info else None,
        version=info.version if info else None,
        trainable_params=adapter.trainable_params(model),
        checkpoint=checkpoint,
    )


def _provenance(loaded: LoadedVLM, fusion: FusionInfo | None, seeds: list[int]) -> Provenance:
    from mmrl_harness.registry import plugin_versions

    provenance = loaded.provenance()
    return Provenance(
        harness_version=__version__,
        git_sha=git_sha(),
        model=ModelInfo(
            name_or_path=loaded.name_or_path,
            revision=provenance.get("revision") or provenance.get("commit_hash"),
            fingerprint=provenance.get("fingerprint"),
            dtype=str(loaded.model.dtype).removeprefix("torch."),
        ),
        fusion=fusion or FusionInfo(name="concat"),
        libraries=library_versions(),
        plugins=plugin_versions(),
        seeds=seeds,
        hardware=hardware_info(),
        command=list(sys.argv),
    )
