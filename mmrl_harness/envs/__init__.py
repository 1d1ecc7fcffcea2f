"""Built-in environments (Gymnasium API, image + text observations), registered under ``mmrl/``.

Importing this package registers the ids; the environment modules themselves (PIL, minigrid,
datasets) load only when an env is made. Without importing it first, Gymnasium can still make
them: ``gymnasium.make("mmrl_harness.envs:mmrl/NumberLine-v0")``.

| id | kind | what it is |
|---|---|---|
| ``mmrl/ColorShape-v0`` | single turn | name the colour or shape of one drawn shape |
| ``mmrl/Counting-v0`` | single turn | count drawn shapes (all, of a colour, or of a shape) |
| ``mmrl/NumberLine-v0`` | multi turn | move a marker left/right to a target (RL4VLM) |
| ``mmrl/Blackjack-v0`` | multi turn | hit/stand on cards drawn as images (Gymnasium rules) |
| ``mmrl/MiniGridNav-v0`` | multi turn | reach the goal on a MiniGrid map from RGB frames |
| ``mmrl/DatasetVQA-v0`` | single turn | answer a question about a ``datasets`` row's image |
"""

from __future__ import annotations

import os

import gymnasium

# Gymnasium's pygame-drawn envs (FrozenLake, CartPole...) and MiniGrid initialise pygame, whose
# video and audio probes print "XDG_RUNTIME_DIR is invalid" / ALSA errors on headless machines.
# Frames are drawn off-screen and never need sound; a user's own setting still wins.
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

#: id -> "module:class"; strings so that registering imports none of them.
ENV_ENTRY_POINTS: dict[str, str] = {
    "mmrl/ColorShape-v0": "mmrl_harness.envs.shapes:ColorShapeEnv",
    "mmrl/Counting-v0": "mmrl_harness.envs.shapes:CountingEnv",
    "mmrl/NumberLine-v0": "mmrl_harness.envs.numberline:NumberLineEnv",
    "mmrl/Blackjack-v0": "mmrl_harness.envs.blackjack:BlackjackCardsEnv",
    "mmrl/MiniGridNav-v0": "mmrl_harness.envs.minigrid_nav:MiniGridNavEnv",
    "mmrl/DatasetVQA-v0": "mmrl_harness.envs.dataset_vqa:DatasetVQAEnv",
}


def register_envs() -> None:
    """Register every built-in id with Gymnasium (idempotent)."""
    for env_id, entry_point in ENV_ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)


register_envs()

__all__ = ["ENV_ENTRY_POINTS", "register_envs"]
