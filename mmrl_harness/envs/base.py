"""The base of the built-in environments: Gymnasium envs whose observation is an image plus text.

Observation: ``{"image": uint8 (H, W, 3), "text": str}``. Actions are ``Discrete`` indices into
``action_words`` (the words a model says), except for free-text answer environments, whose action
space is ``Text``. ``render()`` returns the current frame (``render_mode="rgb_array"`` only).
"""

from __future__ import annotations

import string
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from mmrl_harness.envs.drawing import add_noise, to_array

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


#: Clean frames of envs whose frame is a pure function of a small discrete state, keyed by
#: ``(env class, image_size, ImageTextEnv._frame_key())``; least recently used dropped first.
FrameKey = tuple[type, int, Hashable]
_FRAMES: OrderedDict[FrameKey, np.ndarray] = OrderedDict()
FRAME_CACHE_SIZE = 1024


def _memo_frame(key: FrameKey, draw: Any) -> np.ndarray:
    """The cached clean frame for ``key``, drawn with ``draw()`` on a miss.

    Stored backed by ``bytes``, so the one array handed out to every episode can never be made
    writeable (``setflags(write=True)`` raises): nothing can write into the cache.
    """
    frame = _FRAMES.get(key)
    if frame is not None:
        _FRAMES.move_to_end(key)
        return frame
    drawn: np.ndarray = draw()
    frame = np.frombuffer(drawn.tobytes(), dtype=np.uint8).reshape(drawn.shape)
    _FRAMES[key] = frame
    if len(_FRAMES) > FRAME_CACHE_SIZE:
        _FRAMES.popitem(last=False)
    return frame


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
        self._clean: np.ndarray | None = None  # the last frame drawn, before pixel noise

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

    def _frame_key(self) -> Hashable | None:
        """What ``_draw()``'s pixels are a pure function of (besides the class and image size),
        for envs with a small discrete state whose frames repeat: their frames are then drawn
        once and memoised. ``None`` (the default): draw every frame."""
        return None

    # -- shared ------------------------------------------------------------------------------
    def _clean_frame(self) -> np.ndarray:
        """The current state drawn, as ``uint8 (H, W, 3)`` without noise."""
        drawn = self._draw()
        image = Image.fromarray(drawn) if isinstance(drawn, np.ndarray) else drawn
        return to_array(image)

    def _observation(self) -> dict[str, Any]:
        key = self._frame_key()
        if key is None:
            self._clean = self._clean_frame()
        else:
            self._clean = _memo_frame((type(self), self.image_size, key), self._clean_frame)
        return self._unchanged_observation()

    def _unchanged_observation(self) -> dict[str, Any]:
        """The observation of a state that has not changed since the last ``_observation()``:
        the frame is not drawn again (the pixel noise, when on, is drawn afresh as before)."""
        if self._clean is None:
            return self._observation()
        self._frame = add_noise(self._clean, self.noise, self.np_random)
        # Every observation gets its own array (Gymnasium's contract: users keep what they are
        # given); without noise the frame is the kept clean one, so hand out a copy of it.
        image = self._frame.copy() if self._frame is self._clean else self._frame
        return {"image": image, "text": self._text()}

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The current frame, ``uint8 (H, W, 3)`` (None before the first reset)."""
        if self.render_mode is None:
            return None
        return None if self._frame is None else self._frame.copy()
