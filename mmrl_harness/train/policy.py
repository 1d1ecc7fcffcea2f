"""The policy every algorithm fine-tunes: VLM + fusion adapter + LoRA, built in one place.

``build_policy(config)`` = ``load_vlm`` -> ``attach_fusion`` -> ``apply_lora``. GRPO (TRL) and the
episodic algorithms all start from it, so a run's trainable set (LoRA weights, the adapter's
modules, optionally ``lm_head``) never depends on which algorithm trains it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

    from mmrl_harness.fusion.base import FusionAdapter
    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.results import FusionInfo
    from mmrl_harness.train.config import TrainConfig


@dataclass
class PolicyModel:
    """The model a run trains, and what is needed to prompt, log and describe it.

    Attributes:
        loaded: the loaded VLM; ``loaded.model`` is the *base* model (adapter attached, no LoRA).
        fusion_adapter: the attached fusion adapter (``concat`` for the plain VLM).
        peft_model: ``loaded.model`` wrapped with LoRA; the module trainers optimise.
        lora_config: the PEFT config used (adapter modules and ``lm_head`` in modules_to_save).
    """

    loaded: LoadedVLM
    fusion_adapter: FusionAdapter
    peft_model: PeftModel
    lora_config: LoraConfig

    @property
    def vlm(self) -> LoadedVLM:
        """``loaded`` with the LoRA-wrapped model in place: prompt, generate and evaluate with it."""
        return dataclasses.replace(self.loaded, model=self.peft_model)

    def trainable_parameters(self) -> int:
        """Parameters that receive gradients (LoRA + adapter modules + modules_to_save)."""
        return sum(p.numel() for p in self.peft_model.parameters() if p.requires_grad)

    def log_values(self) -> dict[str, float]:
        """The adapter's learned coefficients and gates, prefixed ``fusion/`` for loggers."""
        values = self.fusion_adapter.log_values(self.peft_model)
        return {f"fusion/{k}": float(v) for k, v in values.items()}

    def fusion_info(self, checkpoint: str | None = None) -> FusionInfo:
        """The results-file description of the adapter (name, options, plugin version, size)."""
        from mmrl_harness.evaluate import fusion_info

        return fusion_info(self.fusion_adapter, self.peft_model, checkpoint)


def build_policy(config: TrainConfig, *, device: str | None = None) -> PolicyModel:
    """Load ``config.model``, attach ``config.fusion``, wrap with ``config.lora``; seeded.

    The seed is set first because PEFT and the adapters initialise their weights randomly, so a
    run (and each rank of a distributed run) starts from identical trainable weights.
    """
    from transformers import set_seed

    from mmrl_harness.fusion.base import attach_fusion
    from mmrl_harness.fusion.lora import apply_lora
    from mmrl_harness.models.loading import load_vlm

    set_seed(config.seed)
    loaded = load_vlm(
        config.model, dtype=config.dtype, device=device, revision=config.model_revision
    )
    adapter = attach_fusion(loaded.model, config.fusion.name, **config.fusion.options)
    peft_model = apply_lora(
        loaded.model, adapter, config.lora.to_peft(), train_lm_head=config.lora.train_lm_head
    )
    # apply_lora extends modules_to_save with the adapter's modules; keep the config it used.
    used: Any = peft_model.peft_config["default"]
    return PolicyModel(loaded, adapter, peft_model, used)
