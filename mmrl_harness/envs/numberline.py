"""NumberLine: move a marker along a drawn line to a target (after RL4VLM's gym_cards task).

Reward as in RL4VLM: +1 on reaching the target (the episode terminates), -1 for a move that makes
no progress (away from the target, or against the end of the line), 0 otherwise. The optimal
return is therefore 1 in ``|target - start|`` steps.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from mmrl_harness.envs.base import ImageTextEnv
from mmrl_harness.envs.drawing import canvas, color_rgb

LEFT, RIGHT = 0, 1


class NumberLineEnv(ImageTextEnv):
    """A marker (blue dot) and a target (red bar) on a line of ``line_length`` positions.

    Args:
        line_length: number of positions (difficulty: the mean distance grows with it).
        image_size: frame side in pixels.
        state_in_text: also state both positions in the text (a text-only control condition).
        noise: standard deviation of Gaussian pixel noise.
    """

    action_words = ("left", "right")

    def __init__(
        self,
        line_length: int = 5,
        image_size: int = 64,
        state_in_text: bool = False,
        noise: float = 0.0,
        render_mode: str | None = "rgb_array",
    ):
        super().__init__(image_size, noise, render_mode)
        if not isinstance(line_length, int) or line_length < 2:
            raise ValueError(f"line_length must be an integer >= 2; got {line_length!r}")
        if image_size < 3 * line_length:
            raise ValueError(
                f"image_size {image_size} is too small for {line_length} positions; "
                f"use at least {3 * line_length} pixels"
            )
        self.line_length = line_length
        self.state_in_text = state_in_text
        self.action_space = spaces.Discrete(2)
        self.position = 0
        self.target = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.target = int(self.np_random.integers(self.line_length))
        # The start is never the target, so every episode needs at least one move.
        offset = int(self.np_random.integers(1, self.line_length))
        self.position = (self.target + offset) % self.line_length
        distance = abs(self.target - self.position)
        # optimal_length: the fewest steps that can succeed, for the episode-length metrics.
        return self._observation(), {"distance": distance, "optimal_length": distance}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 (left) or 1 (right); got {action!r}")
        before = abs(self.target - self.position)
        move = -1 if int(action) == LEFT else 1
        self.position = min(max(self.position + move, 0), self.line_length - 1)
        after = abs(self.target - self.position)
        if after == 0:
            reward, event = 1.0, "goal"
        elif after < before:
            reward, event = 0.0, "progress"
        else:
            reward, event = -1.0, "no_progress"
        info = {"success": after == 0, "event": event, "distance": after}
        return self._observation(), reward, after == 0, False, info

    def oracle_action(self) -> int:
        """Step towards the target."""
        return RIGHT if self.target > self.position else LEFT

    def _x(self, index: int) -> float:
        margin = self.image_size * 0.1
        return margin + index * (self.image_size - 2 * margin) / (self.line_length - 1)

    def _frame_key(self) -> tuple[int, int, int]:
        # The frame is a pure function of these (and the image size): a handful of distinct
        # frames per line length, drawn once each and memoised by the base class.
        return (self.line_length, self.target, self.position)

    def _draw(self) -> Any:
        size = self.image_size
        image, draw = canvas(size, color_rgb("white"))
        mid = size / 2
        spacing = (size * 0.8) / (self.line_length - 1)
        draw.line(
            (self._x(0), mid, self._x(self.line_length - 1), mid),
            fill=color_rgb("black"),
            width=max(1, size // 64),
        )
        tick = max(2.0, size * 0.05)
        for i in range(self.line_length):
            draw.line((self._x(i), mid - tick, self._x(i), mid + tick), fill=color_rgb("black"))
        # Target below the line, marker above it, so both stay visible when they coincide.
        half = max(1.0, min(spacing * 0.3, size * 0.05))
        tx = self._x(self.target)
        draw.rectangle(
            (tx - half, mid + tick, tx + half, mid + tick + size * 0.2), fill=color_rgb("red")
        )
        r = max(1.5, min(spacing * 0.4, size * 0.08))
        mx = self._x(self.position)
        draw.ellipse((mx - r, mid - tick - 2 * r, mx + r, mid - tick), fill=color_rgb("blue"))
        return image

    def _text(self) -> str:
        if self.state_in_text:
            return f"the marker is at {self.position} . the target is at {self.target} ."
        return "move the marker to the target ."
