"""``Algorithm``: what an RL algorithm plugs into ``train(config)``, and how it is found.

An algorithm is a class registered under the ``mmrl_harness.algorithms`` entry-point group (the
built-ins too: ``grpo``, ``ppo``, ``episodic_grpo`` in pyproject.toml). ``TrainConfig`` checks
``algorithm:`` against the registered names and hands the algorithm's options block to
``validate_options`` when the config loads, before any model; ``train(config)`` then calls
``check`` (still before the model loads) and ``train``. Imports nothing heavy: modules that define
algorithms import torch, TRL or the episodic machinery inside their methods, so validating a
config stays cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mmrl_harness.registry import (
    PLUGIN_API_VERSION,
    PluginInfo,
    PluginValidationError,
    require_concrete_subclass,
)

if TYPE_CHECKING:
    from rich.console import Console

    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.policy import PolicyModel
    from mmrl_harness.train.result import TrainResult

#: The ``TrainConfig`` blocks that carry algorithm-specific options.
OptionsField = Literal["grpo", "episodic"]
OPTIONS_FIELDS: tuple[OptionsField, ...] = ("grpo", "episodic")


class Algorithm(ABC):
    """One RL algorithm: validates its options, checks a run early, trains a built policy.

    Subclasses set ``options_field`` (which ``TrainConfig`` block holds their options) and
    ``description``, and implement ``train``. Multi-turn algorithms on the harness's own episodic
    loop subclass ``mmrl_harness.train.episodic.algorithm.EpisodicAlgorithm`` instead, which
    asks only for a rollout scheme, an advantage estimator and optional loss terms and metrics.
    """

    plugin_api_version: ClassVar[int] = PLUGIN_API_VERSION
    options_field: ClassVar[OptionsField] = "episodic"
    description: ClassVar[str] = ""

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError("<field>.<key>: what is wrong")`` if the options block is invalid.

        Called when the config loads (so it must not import torch). The default accepts any.
        """
        return None

    def check(self, config: TrainConfig) -> None:
        """Raise a ``TrainConfigError`` if the run cannot work (task kind, batch sizes).

        Called by ``train`` before the model is loaded. The default accepts every run.
        """
        return None

    @abstractmethod
    def train(
        self, config: TrainConfig, policy: PolicyModel, *, console: Console | None = None
    ) -> TrainResult:
        """Fine-tune ``policy`` as ``config`` says; return the run's ``TrainResult``."""


def load_algorithm(name: str) -> Algorithm:
    """An instance of the registered algorithm ``name`` (an ``UnknownPluginError`` otherwise)."""
    from mmrl_harness.registry import algorithms

    cls = algorithms.load(name)
    return cls()  # type: ignore[no-any-return]


def validate_plugin(obj: Any, info: PluginInfo) -> None:
    """Registry check: an algorithm plugin must be a concrete ``Algorithm`` subclass."""
    require_concrete_subclass(obj, Algorithm, info, "algorithm")
    if obj.options_field not in OPTIONS_FIELDS:
        raise PluginValidationError(
            f"algorithm plugin {info.name!r} sets options_field = {obj.options_field!r}; use "
            f"one of {', '.join(OPTIONS_FIELDS)}"
        )
