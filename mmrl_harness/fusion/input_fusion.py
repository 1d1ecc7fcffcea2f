"""Adapters whose one trainable module sits at the language model's input embeddings.

``weighted_sum`` and ``mm_transformer`` both fuse there: the module is added to the language
model under ``INPUT_FUSION_ATTR`` and sees each sample's image tokens through the image context.
This base class holds the shared attach, lookup and ``modules_to_save`` logic.
"""

from __future__ import annotations

from abc import abstractmethod

from torch import nn

from mmrl_harness.fusion.base import FusionAdapter, active_module, base_model, require_part
from mmrl_harness.fusion.blocks import like_embedding
from mmrl_harness.fusion.image_context import INPUT_FUSION_ATTR, install_image_context
from mmrl_harness.models.anatomy import Anatomy, get_submodule


class InputFusionAdapter(FusionAdapter):
    """A fusion adapter made of one module at the language model's input."""

    @abstractmethod
    def build_module(self, hidden: int) -> nn.Module:
        """The fusion module for a language model of width ``hidden`` (identity at init)."""

    def _attach(self, model: nn.Module, anatomy: Anatomy) -> None:
        language_model = require_part(model, anatomy, "language_model", self.name)
        embed = require_part(model, anatomy, "embed_tokens", self.name)
        module = self.build_module(int(anatomy.text_config(model).hidden_size))
        language_model.add_module(INPUT_FUSION_ATTR, like_embedding(module, embed))
        install_image_context(model, anatomy)

    def _path(self, model: nn.Module) -> str:
        return f"{self.anatomy(model).language_model}.{INPUT_FUSION_ATTR}"

    def fusion_module(self, model: nn.Module) -> nn.Module:
        """The module that runs (the trainable copy once PEFT wraps the model)."""
        return active_module(get_submodule(base_model(model), self._path(model)))

    def trainable_module_names(self, model: nn.Module) -> list[str]:
        """The fusion module on the language model."""
        return [self._path(model)]
