"""The base of the built-in environments: Gymnasium envs whose observation is an image plus text.

Observation: ``{"image": uint8 (H, W, 3), "text": str}``. Actions are ``Discrete`` indices into
``action_words`` (the words a model says), except for free-text answer environments, whose action
space is ``Text``. ``render()`` returns the current frame (``render_mode="rgb_array"`` only).
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from mmrl_harness.envs.drawing import to_array

#: Characters a text observation may hold (Gymnasium's ``Text`` space defaults to alphanumerics).
TEXT_CHARSET = string.printable
MAX_TEXT_LENGTH = 1024


def check_image_size(image_size: int) -> int:
    """Reject frame sizes too small to draw anything recognisable."""
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16 pixels; got {image_size!r}")
    return image_size


def text_space() -> spaces.Text:
    """The ``Text`` space of observation text and free-text actions."""
    return spaces.Text(max_length=MAX_TEXT_LENGTH, min_length=0, charset=TEXT_CHARSET)


def image_text_space(height: int, width: int | None = None) -> spaces.Dict:
    """The observation space ``{"image": Box(uint8, (H, W, 3)), "text": Text}``."""
    shape = (height, width if width is not None else height, 3)
    return spaces.Dict({"image": spaces.Box(0, 255, shape, np.uint8), "text": text_space()})


class ImageTextEnv(gym.Env[dict[str, Any], Any]):
    """A Gymnasium env drawn with PIL whose observation is ``{"image", "text"}``.

    Subclasses draw the current state in ``_draw()`` and describe it in ``_text()``; the base
    adds optional pixel noise (a data-quality knob) and keeps the last frame for ``render()``.
    ``info`` of every step carries ``success`` (bool) and ``event`` (a name the task's reward
    mapping can re-score, e.g. ``"goal"``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012 (Gymnasium API)
    #: The word for each ``Discrete`` action index; empty for free-text action spaces.
    action_words: tuple[str, ...] = ()

    def __init__(self, image_size: int, noise: float = 0.0, render_mode: str | None = "rgb_array"):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None; got {render_mode!r}")
        if noise < 0:
            raise ValueError(f"noise is a pixel standard deviation and must be >= 0; got {noise}")
        self.render_mode = render_mode
        self.image_size = check_image_size(image_size)
        self.noise = float(noise)
        self.observation_space = image_text_space(self.image_size)
        self._frame: np.ndarray | None = None

    # -- subclass hooks ----------------------------------------------------------------------
    def _draw(self) -> Any:
        """The current state as a PIL image (or a uint8 array)."""
        raise NotImplementedError

    def _text(self) -> str:
        """The current state's text (question, mission or state description)."""
        raise NotImplementedError

    def oracle_action(self) -> Any:
        """What a scripted policy does now: optimal where the task has an optimum."""
        raise NotImplementedError(f"{type(self).__name__} has no scripted policy")

    # -- shared ------------------------------------------------------------------------------
    def _observation(self) -> dict[str, Any]:
        drawn = self._draw()
        image = Image.fromarray(drawn) if isinstance(drawn, np.ndarray) else drawn
        self._frame = to_array(image, self.noise, self.np_random)
        return {"image": self._frame, "text": self._text()}

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The current frame, ``uint8 (H, W, 3)`` (None before the first reset)."""
        if self.render_mode is None:
            return None
        return None if self._frame is None else self._frame.copy()
