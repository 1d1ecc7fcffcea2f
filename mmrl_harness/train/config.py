"""``TrainConfig``: one validated, documented description of a fine-tuning run.

A run is model x fusion adapter x LoRA x task x algorithm x seed. Every field carries a
description: it is the documentation (``docs/training.md``), the CLI help, and the "expected"
line of a ``TrainConfigError``. Unknown keys are errors (``extra="forbid"``) so a misspelt key
never silently falls back to a default. Imports only pydantic and PyYAML, so the CLI can validate
a config before paying for torch.

``algorithm`` names a registered algorithm (the ``mmrl_harness.algorithms`` entry points; a
misspelt name fails here with a suggestion). Algorithm-specific knobs live in two pass-through
blocks, and the algorithm validates its own: ``grpo`` (extra ``trl.GRPOConfig`` keyword
arguments, checked against GRPOConfig's fields when training starts) and ``episodic``
(``mmrl_harness.train.episodic.config.EpisodicConfig``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mmrl_harness.config_io import (
    DefinitionError,
    apply_overrides,
    problems_from,
    read_yaml_mapping,
)


class TrainConfigError(DefinitionError):
    """A training config is malformed; says which file, which field, and the expected form."""

    what = "training config"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FusionSpec(_Strict):
    """Which fusion adapter to attach before LoRA, and its options."""

    name: str = Field(
        "concat",
        description="a registered fusion adapter (`mmrl plugins --kind fusion` lists them): "
        "concat (the VLM's own token concatenation), weighted_sum, cross_attention, "
        "mm_transformer, or a plugin's name",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the adapter's options, e.g. {every: 2} for cross_attention (docs/fusion.md "
        "lists each adapter's)",
    )


class LoraSpec(_Strict):
    """The PEFT LoRA configuration; the fusion adapter's modules are added to modules_to_save."""

    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field(
        # The literal of fusion.lora.LANGUAGE_MODEL: this module must not import torch or PEFT.
        "language-model",
        description="which layers get LoRA: language-model (every linear layer of the language "
        "model; vision tower and projector frozen), all-linear (every linear layer except the "
        "output layer, vision tower included: what randomly initialised tiny models need), or "
        "module names (or suffixes), or a PEFT regex",
    )
    train_lm_head: bool = Field(
        True,
        description="train the output layer fully (PEFT modules_to_save): needed when the "
        "model's lm_head is random or must move far (tiny models); off for large pretrained "
        "models to keep the trainable set small",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="extra module names trained in full and saved with the adapter",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases train")

    def to_peft(self) -> Any:
        """A ``peft.LoraConfig`` of these fields; ``fusion.lora.fusion_lora_config`` completes
        its modules_to_save (output layer when train_lm_head, the adapter's modules)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            modules_to_save=list(self.modules_to_save) or None,
            bias=self.bias,
            task_type="CAUSAL_LM",
        )


class SeedRange(_Strict):
    """A consecutive range of environment seeds."""

    start: int = Field(0, ge=0, description="first seed")
    count: int = Field(1000, ge=1, description="number of consecutive seeds")

    def seeds(self) -> list[int]:
        """The seeds, in order."""
        return list(range(self.start, self.start + self.count))


class EvalSpec(_Strict):
    """Evaluation of the trained policy at the end of the run (and optionally before it)."""

    enabled: bool = Field(True, description="evaluate the final policy and write results.json")
    before: bool = Field(
        False, description="also evaluate the untrained policy (written to results_before.json)"
    )
    episodes: int | None = Field(
        None, ge=1, description="episodes to run; None runs one per evaluation seed of the task"
    )
    seeds: list[int] | None = Field(
        None, description="evaluation seeds; None uses the task's eval_seeds"
    )
    policy_mode: str = Field(
        "generate",
        description="how the policy acts: generate (free text, parsed by the task) or a mode "
        "the evaluator offers (e.g. action_logits: softmax over the action words)",
    )
    do_sample: bool = Field(False, description="sample instead of greedy decoding")
    batch_size: int = Field(16, ge=1, description="episodes run side by side")


class TrainConfig(_Strict):
    """One fine-tuning run: model, fusion adapter, LoRA, task, algorithm, schedule, evaluation."""

    model: str = Field(
        "tiny-llava",
        description="a Hub id, a local save_pretrained folder, or tiny-llava / tiny-qwen2-vl "
        "(built offline)",
    )
    model_revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit sha) to pin"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="weight dtype; auto keeps the checkpoint's (mixed precision is separate: "
        "TRL trains in bf16 on GPUs unless grpo: {bf16: false})",
    )
    fusion: FusionSpec = Field(
        default_factory=FusionSpec,  # type: ignore[arg-type]
        description="{name, options} of the fusion adapter",
    )
    lora: LoraSpec = Field(
        default_factory=LoraSpec,  # type: ignore[arg-type]
        description="{r, alpha, dropout, target_modules, train_lm_head, modules_to_save, bias}",
    )
    task: str = Field(description="a task name (`mmrl tasks` lists them) or a task YAML path")
    task_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted task fields to replace, e.g. {env_kwargs.image_size: 32}",
    )
    allow_env_imports: bool = Field(
        False,
        description="RUNS CODE: let the task's env 'module:Id' import that module (never from "
        "the working directory); off, only ids already registered with Gymnasium are accepted",
    )
    algorithm: str = Field(
        "grpo",
        description="a registered algorithm (`mmrl plugins --kind algorithms` lists them): grpo: "
        "TRL GRPOTrainer on single-turn tasks; ppo: episodic PPO with a value head and GAE; "
        "episodic_grpo: group-relative advantages over whole episodes; or a plugin's name",
    )
    seed: int = Field(0, description="seed of torch, numpy, python and the data order")
    output_dir: str = Field(
        "runs/train",
        description="where checkpoints, logs and results.json go (resumes from here)",
    )
    resume: bool = Field(
        True, description="continue from the last checkpoint in output_dir if one exists"
    )
    allow_config_change: bool = Field(
        False,
        description="on resume, accept a config that differs from the checkpoint's in safe "
        "fields only (max_steps, save_steps, save_total_limit, logging_steps, report_to, eval, "
        "episodic eval/stop cadence); model, fusion, LoRA, task, algorithm, seed, learning "
        "rate and the rest are always refused",
    )
    max_steps: int = Field(100, ge=1, description="optimizer steps to train for")
    learning_rate: float = Field(
        1e-4, gt=0, description="peak learning rate (grpo: TRL's AdamW; episodic: Adam, eps 1e-5)"
    )
    per_device_batch_size: int = Field(
        8,
        ge=1,
        description="completions (grpo) or episodes (episodic) per device per step; grpo: the "
        "global batch must be a multiple of num_generations",
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per step")
    num_generations: int = Field(
        8, ge=2, description="completions (or episodes) per prompt (or env seed) in a group"
    )
    max_new_tokens: int = Field(8, ge=1, description="tokens the policy may generate per turn")
    temperature: float = Field(1.0, gt=0, description="sampling temperature during training")
    train_seeds: SeedRange = Field(
        default_factory=SeedRange,  # type: ignore[arg-type]
        description="{start, count}: environment seeds training episodes start from (keep them "
        "apart from the task's eval seeds, which start at 10000)",
    )
    save_steps: int = Field(50, ge=1, description="write a checkpoint every this many steps")
    save_total_limit: int | None = Field(
        2, ge=1, description="checkpoints kept in output_dir (oldest removed); None keeps all"
    )
    logging_steps: int = Field(1, ge=1, description="log metrics every this many steps")
    report_to: str | list[str] = Field(
        "none",
        description="trackers for TRL/transformers: none, all, tensorboard, wandb, trackio, ...",
    )
    use_cpu: bool | None = Field(
        None, description="train on CPU even when a GPU is present; None: CPU only without CUDA"
    )
    eval: EvalSpec = Field(
        default_factory=EvalSpec,  # type: ignore[arg-type]
        description="{enabled, before, episodes, seeds, policy_mode, do_sample, batch_size}",
    )
    grpo: dict[str, Any] = Field(
        default_factory=dict,
        description="extra trl.GRPOConfig arguments (grpo only), e.g. {beta: 0.04, use_vllm: "
        "true, vllm_mode: colocate, loss_type: dapo}",
    )
    episodic: dict[str, Any] = Field(
        default_factory=dict,
        description="episodic trainer options (ppo, episodic_grpo and other episodic "
        "algorithms), validated by mmrl_harness.train.episodic.config.EpisodicConfig",
    )

    @field_validator("algorithm")
    @classmethod
    def _registered_algorithm(cls, name: str) -> str:
        from mmrl_harness.registry import algorithms

        known = algorithms.names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown algorithm {name!r}; {hint}registered: {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _sections_fit_algorithm(self) -> TrainConfig:
        # Messages start with "field: " so problems_from names the field (see tasks.loader).
        from mmrl_harness.train.algorithms.base import OPTIONS_FIELDS, load_algorithm

        algorithm = load_algorithm(self.algorithm)
        own = algorithm.options_field
        for name in OPTIONS_FIELDS:
            if name != own and getattr(self, name):
                raise ValueError(
                    f"{name}: not used by algorithm {self.algorithm}, whose options go in {own}:"
                )
        algorithm.validate_options(getattr(self, own))
        return self


def train_config_from_dict(
    data: Mapping[str, Any], source: str | Path | None = None
) -> TrainConfig:
    """Validate a mapping as a ``TrainConfig``; errors become a ``TrainConfigError``."""
    try:
        return TrainConfig.model_validate(dict(data))
    except ValidationError as err:
        raise TrainConfigError(source, problems_from(err, TrainConfig)) from None


def load_train_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Load a training YAML file, apply dotted ``overrides`` (``{"lora.r": 4}``) and validate.

    ``output_dir`` relative paths stay relative to the working directory (like TRL's), not to the
    file, so the same example runs from anywhere with ``--override output_dir=...``.
    """
    path = Path(path)
    data = read_yaml_mapping(
        path,
        TrainConfigError,
        "a mapping of training fields (model: ..., task: ..., algorithm: ...)",
    )
    # task_overrides keys are themselves dotted task paths: task_overrides.env_kwargs.size=32
    # sets the one entry "env_kwargs.size" of that mapping.
    data = apply_overrides(
        data, overrides or {}, path, TrainConfigError, dotted_leaves=("task_overrides",)
    )
    return train_config_from_dict(data, path)
