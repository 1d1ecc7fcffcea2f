"""Grid navigation on MiniGrid with RGB frames of the whole grid and the mission as text.

Wraps any ``minigrid`` env id (default ``MiniGrid-Empty-5x5-v0``): the observation becomes the
fully observed RGB frame plus the mission text; actions are MiniGrid's, named by words. Reward is
MiniGrid's (``1 - 0.9 * steps / max_steps`` on reaching the goal, else 0); ``info["event"]`` is
``"goal"`` then, so a task can re-score it (e.g. ``events: {goal: 1.0}``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, cast

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
from gymnasium import spaces

from mmrl_harness.envs.base import ImageTextEnv, image_text_space
from mmrl_harness.envs.drawing import resize_frame

#: MiniGrid's ``Actions`` enum order, named by single-token words ("pick" = pickup,
#: "stay" = done); "drop" has no tiny-vocabulary word but keeps the indices aligned.
MINIGRID_ACTION_WORDS = ("left", "right", "forward", "pick", "drop", "toggle", "stay")
_DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid's agent_dir 0..3: east south west north


class MiniGridNavEnv(ImageTextEnv):
    """A MiniGrid env with RGB frames; text is the mission.

    Args:
        env_id: a registered MiniGrid id.
        size: grid side, passed as ``size=`` to envs that take it (Empty, DoorKey...); None keeps
            the id's size.
        tile_size: pixels per grid cell when drawing; None picks the smallest that covers
            ``image_size`` (8 without one), so the resize only shrinks a little.
        image_size: resize frames to this side (nearest neighbour, so cells stay crisp); None
            keeps ``grid side * tile_size``.
        max_steps: MiniGrid's own step limit (its reward decays over it); None keeps its default.
        highlight: shade the agent's field of view, as MiniGrid draws by default.
    """

    action_words = MINIGRID_ACTION_WORDS

    def __init__(
        self,
        env_id: str = "MiniGrid-Empty-5x5-v0",
        size: int | None = None,
        tile_size: int | None = None,
        image_size: int | None = 64,
        max_steps: int | None = None,
        highlight: bool = False,
        noise: float = 0.0,
        render_mode: str | None = "rgb_array",
    ):
        kwargs: dict[str, Any] = {}
        if size is not None:
            kwargs["size"] = size
        if max_steps is not None:
            kwargs["max_steps"] = max_steps
        # No render_mode: frames come from get_frame(), which takes the tile size directly.
        self._inner: gym.Env[Any, Any] = gym.make(env_id, disable_env_checker=True, **kwargs)
        # MiniGrid attributes (width, grid, agent_pos) are not on gym.Env, so type it loosely.
        self._grid_env: Any = cast(Any, self._inner.unwrapped)
        if tile_size is None:
            tile_size = 8 if image_size is None else math.ceil(image_size / self._grid_env.width)
        self.tile_size, self.highlight = tile_size, highlight
        native = self._grid_env.width * tile_size
        super().__init__(image_size if image_size is not None else native, noise, render_mode)
        self._resize_to = image_size
        height = self._grid_env.height * tile_size if image_size is None else image_size
        self.observation_space = image_text_space(height, self.image_size)
        self.action_space = spaces.Discrete(len(MINIGRID_ACTION_WORDS))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        # MiniGrid draws the layout from its own generator; seed it from ours for determinism.
        inner_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        self._inner.reset(seed=inner_seed)
        return self._observation(), {}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(
                f"action must be an index into {MINIGRID_ACTION_WORDS}; got {action!r}"
            )
        _, reward, terminated, truncated, _ = self._inner.step(int(action))
        reached = bool(terminated and float(reward) > 0)
        info = {"success": reached, "event": "goal" if reached else "move"}
        return self._observation(), float(reward), bool(terminated), bool(truncated), info

    def _draw(self) -> Any:
        frame = self._grid_env.get_frame(highlight=self.highlight, tile_size=self.tile_size)
        return resize_frame(frame, self._resize_to, nearest=True)

    def _text(self) -> str:
        return str(self._grid_env.mission)

    def oracle_action(self) -> int:
        """The first action of a shortest left/right/forward path to the goal (breadth-first)."""
        env = self._grid_env
        start = (*env.agent_pos, env.agent_dir)
        first: dict[tuple[int, int, int], int | None] = {start: None}
        queue = deque([start])
        while queue:
            x, y, d = state = queue.popleft()
            cell = env.grid.get(x, y)
            if cell is not None and cell.type == "goal":
                action = first[state]
                return 2 if action is None else action
            dx, dy = _DIRECTIONS[d]
            ahead = env.grid.get(x + dx, y + dy)
            moves = [(0, (x, y, (d - 1) % 4)), (1, (x, y, (d + 1) % 4))]
            if ahead is None or ahead.can_overlap():
                moves.append((2, (x + dx, y + dy, d)))
            for action, nxt in moves:
                if nxt not in first:
                    first[nxt] = action if first[state] is None else first[state]
                    queue.append(nxt)
        raise RuntimeError("no path to a goal square from the agent's position")

    def close(self) -> None:
        self._inner.close()
