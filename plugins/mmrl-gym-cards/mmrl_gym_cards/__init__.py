"""mmrl-gym-cards: EZPoints and Points24 (after RL4VLM's gym_cards) as mmrl-harness tasks.

Importing this module registers the Gymnasium ids ``gym_cards/EZPoints-v0`` and
``gym_cards/Points24-v0`` (the env classes load only when an env is made) and defines ``SUITE``,
the folder of task YAMLs shipped in the package, which the ``mmrl_harness.tasks`` entry point names.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium

from mmrl_harness.tasks import TaskFolder

__version__ = "0.1.0"

#: Gymnasium id -> "module:class"; strings, so registering imports neither PIL nor the envs.
ENV_ENTRY_POINTS: dict[str, str] = {
    "gym_cards/EZPoints-v0": "mmrl_gym_cards.envs:EZPointsEnv",
    "gym_cards/Points24-v0": "mmrl_gym_cards.envs:Points24Env",
}

for _env_id, _entry_point in ENV_ENTRY_POINTS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point)

#: The task pack: ``ezpoints``, ``points24`` and ``points24_easy``.
SUITE = TaskFolder(Path(__file__).parent / "tasks")

__all__ = ["ENV_ENTRY_POINTS", "SUITE"]
