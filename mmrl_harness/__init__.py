"""mmrl-harness: fine-tune vision-language models with RL and compare image-text fusion strategies.

Importing the package is cheap (no torch): the public API below is loaded on first use.
"""

from __future__ import annotations

import pkgutil
from typing import Any

__version__ = "0.1.0"

# name -> "module:attribute"; resolved lazily so `mmrl plugins` never imports torch.
_PUBLIC = {
    "load_vlm": "mmrl_harness.models.loading:load_vlm",
    "build_tiny_vlm": "mmrl_harness.models.tiny:build_tiny_vlm",
    "Anatomy": "mmrl_harness.models.anatomy:Anatomy",
    "anatomy_for": "mmrl_harness.models.anatomy:anatomy_for",
    "LoadedVLM": "mmrl_harness.models.loading:LoadedVLM",
    "generate_answer": "mmrl_harness.models.generation:generate_answer",
    "FusionAdapter": "mmrl_harness.fusion.base:FusionAdapter",
    "attach_fusion": "mmrl_harness.fusion.base:attach_fusion",
    "apply_lora": "mmrl_harness.fusion.lora:apply_lora",
    "list_tasks": "mmrl_harness.tasks:list_tasks",
    "get_task": "mmrl_harness.tasks:get_task",
    "make_task_env": "mmrl_harness.tasks:make_task_env",
    "run_episodes": "mmrl_harness.rollout:run_episodes",
    "VLMPolicy": "mmrl_harness.rollout:VLMPolicy",
    "evaluate": "mmrl_harness.evaluate:evaluate",
    "run_eval": "mmrl_harness.evaluate:run_eval",
    "load_results": "mmrl_harness.results:load_results",
    "TrainConfig": "mmrl_harness.train.config:TrainConfig",
    "load_train_config": "mmrl_harness.train.config:load_train_config",
    "build_policy": "mmrl_harness.train.policy:build_policy",
    "train": "mmrl_harness.train:train",
    "PLUGIN_API_VERSION": "mmrl_harness.registry:PLUGIN_API_VERSION",
    "get_registry": "mmrl_harness.registry:get_registry",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mmrl_harness' has no attribute {name!r}")
    return pkgutil.resolve_name(_PUBLIC[name])
