"""Single-turn visual question answering over a ``datasets`` dataset (image, question, answer).

Each episode is one row: ``reset(seed=s)`` shows row ``s % len(dataset)`` (so evaluation seeds
0..N-1 visit every row once), ``reset(options={"index": i})`` shows row ``i``, and an unseeded
reset picks a row at random. ``step(answer_text)`` scores the answer by normalised exact match
against the answer column (a string, a number, or a list of acceptable answers).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmrl_harness.envs.base import ImageTextEnv, image_text_space, text_space
from mmrl_harness.envs.drawing import resize_frame

_DATA_FILE_BUILDERS = {
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".arrow": "arrow",
}


def normalize_answer(text: str) -> str:
    """Lower-case, trim, drop surrounding punctuation and collapse spaces: ``" Red. "`` -> ``red``."""
    text = re.sub(r"\s+", " ", str(text).strip().lower())
    return text.strip(" .,!?;:\"'")


def load_rows(path: str, split: str, name: str | None = None) -> Any:
    """A ``datasets.Dataset`` from a ``save_to_disk`` folder, a data file, or a Hub id."""
    import datasets  # imported here: it is slow, and only dataset tasks need it

    local = Path(path).expanduser()
    try:
        if local.is_dir() and any(
            (local / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")
        ):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"split {split!r} not in {path} (splits: {list(loaded)})")
                return loaded[split]
            return loaded
        if local.is_file():
            builder = _DATA_FILE_BUILDERS.get(local.suffix)
            if builder is None:
                raise ValueError(
                    f"unsupported data file {path}; use one of "
                    f"{', '.join(_DATA_FILE_BUILDERS)} or a save_to_disk folder"
                )
            return datasets.load_dataset(builder, data_files=str(local), split="train")
        return datasets.load_dataset(path, name, split=split)
    except Exception as err:
        raise ValueError(
            f"could not load dataset {path!r} (split {split!r}): {type(err).__name__}: {err}. "
            "Give a Hub dataset id, a folder written by Dataset.save_to_disk, or a "
            ".parquet/.json/.jsonl/.csv file."
        ) from err


def to_rgb_array(value: Any) -> np.ndarray:
    """An image cell (PIL image, array, file path, or ``{"bytes"|"path": ...}``) as uint8 RGB."""
    if isinstance(value, dict):
        if value.get("bytes"):
            import io

            value = Image.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            value = value["path"]
    if isinstance(value, (str, Path)):
        value = Image.open(value)
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB"), dtype=np.uint8)
    array = np.asarray(value)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"image cell of shape {array.shape} is not an RGB image")
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


class DatasetVQAEnv(ImageTextEnv):
    """One dataset row per episode; the action is the answer text.

    Args:
        path: a Hub dataset id, a ``save_to_disk`` folder, or a data file.
        split: which split to read.
        name: the dataset configuration name, if it has several.
        image_column, question_column, answer_column: column names.
        image_size: resize images to this side; None keeps each row's size.
    """

    def __init__(
        self,
        path: str,
        split: str = "test",
        name: str | None = None,
        image_column: str = "image",
        question_column: str = "question",
        answer_column: str = "answer",
        image_size: int | None = None,
        noise: float = 0.0,
        render_mode: str | None = "rgb_array",
    ):
        self.rows = load_rows(path, split, name)
        missing = [
            c
            for c in (image_column, question_column, answer_column)
            if c not in self.rows.column_names
        ]
        if missing:
            raise ValueError(
                f"dataset {path!r} has no column(s) {missing}; columns: {self.rows.column_names}"
            )
        if len(self.rows) == 0:
            raise ValueError(f"dataset {path!r} split {split!r} is empty")
        first = to_rgb_array(self.rows[0][image_column])
        super().__init__(
            image_size if image_size is not None else max(16, first.shape[0]), noise, render_mode
        )
        self._resize_to = image_size
        self.columns = (image_column, question_column, answer_column)
        if image_size is None:  # rows keep their own sizes: the space cannot promise one shape
            self.observation_space = image_text_space(first.shape[0], first.shape[1])
        self.action_space = text_space()
        self.index = 0
        self._row: dict[str, Any] = {}
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if options and "index" in options:
            self.index = int(options["index"]) % len(self.rows)
        elif seed is not None:
            self.index = seed % len(self.rows)
        else:
            self.index = int(self.np_random.integers(len(self.rows)))
        self._row = self.rows[self.index]
        self._done = False
        return self._observation(), {"index": self.index}

    def answers(self) -> list[str]:
        """The current row's acceptable answers, normalised."""
        raw = self._row[self.columns[2]]
        values = raw if isinstance(raw, (list, tuple)) else [raw]
        return [normalize_answer(v) for v in values]

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the question was answered; call reset() for the next one")
        self._done = True
        correct = normalize_answer(str(action)) in self.answers()
        info = {
            "success": correct,
            "event": "correct" if correct else "wrong",
            "answer": self.answers()[0],
            "index": self.index,
        }
        return self._observation(), float(correct), True, False, info

    def oracle_action(self) -> str:
        """The first acceptable answer."""
        return self.answers()[0]

    def _draw(self) -> Any:
        return resize_frame(to_rgb_array(self._row[self.columns[0]]), self._resize_to)

    def _text(self) -> str:
        return str(self._row[self.columns[1]])
