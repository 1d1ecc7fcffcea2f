"""Checkpoints of the episodic trainers: atomic, trainable weights only, resumable.

A checkpoint is ``output_dir/checkpoint-<update>/``: ``accelerator.save_state`` (the trainable
weights — LoRA, the fusion adapter's modules, ``lm_head`` when trained, the value head — the
optimizer, every process's RNG states) plus ``trainer_state.json`` (the update counter, the best
evaluation so far, the run's wall time) and the PEFT adapter files (``adapter_config.json``,
``adapter_model.safetensors``), so ``PeftModel.from_pretrained`` — and ``mmrl eval --checkpoint``
— load a checkpoint folder directly, as they load a TRL one; and, written last, ``manifest.json``
(``train/manifest.py``: what the checkpoint holds and the sha256 of every file).

It is written under a temporary name and renamed into place, so a run killed while saving (even
by SIGKILL) leaves the previous checkpoint as the latest complete one. The frozen base weights
are not written: a resumed run reloads them from the model it names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import nn

from mmrl_harness.train.checkpoints import COMPLETE_MARKER as STATE_FILE
from mmrl_harness.train.checkpoints import (
    TMP_PREFIX,
    CheckpointError,
    CorruptCheckpointError,
    fault_point,
    is_complete,
    list_checkpoints,
)
from mmrl_harness.train.manifest import CheckpointManifest, write_manifest

CHECKPOINT_PREFIX = "checkpoint-"
BEST_DIR = "best"

__all__ = [
    "BEST_DIR",
    "CHECKPOINT_PREFIX",
    "STATE_FILE",
    "CheckpointError",
    "copy_as_best",
    "keep_trainable_only",
    "load_checkpoint",
    "save_checkpoint",
    "trainable_names",
]


def trainable_names(model: nn.Module) -> set[str]:
    """State-dict keys of the parameters that train, without a DDP wrapper's ``module.`` prefix
    (Accelerate saves and loads the unwrapped model's keys)."""
    return {_unwrapped(name) for name, param in model.named_parameters() if param.requires_grad}


def _unwrapped(key: str) -> str:
    return key.removeprefix("module.")


def keep_trainable_only(accelerator: Accelerator, model: nn.Module) -> None:
    """Make ``save_state`` write only ``model``'s trainable weights (the base stays on the Hub).

    Sharded engines (DeepSpeed, FSDP) write their own shards; they are left as they are.
    """
    if accelerator.distributed_type.value in ("DEEPSPEED", "FSDP"):
        return
    keep = trainable_names(model)

    def hook(models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        for state in weights:
            for key in [k for k in state if _unwrapped(k) not in keep]:
                del state[key]

    accelerator.register_save_state_pre_hook(hook)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | Path,
    update: int,
    trainer_state: dict[str, Any],
    peft_model: nn.Module,
    *,
    keep_last: int | None,
    manifest: CheckpointManifest | None = None,
) -> Path:
    """Write ``checkpoint-<update>`` atomically (all processes call this); return its path.

    ``manifest`` (a ``manifest_template``) is completed with the step and file hashes and
    written last, just before the rename.
    """
    root = Path(output_dir)
    final = root / f"{CHECKPOINT_PREFIX}{update}"
    tmp = root / f"{TMP_PREFIX}{CHECKPOINT_PREFIX}{update}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left over by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's RNG file is written before it is hashed
    if accelerator.is_main_process:
        # Beside save_state's files, as in TRL checkpoints: `mmrl eval --checkpoint` loads it.
        peft_model.save_pretrained(str(tmp))  # type: ignore[operator]
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
        fault_point("checkpoint-write", update)
        if manifest is not None:
            write_manifest(tmp, manifest, update)
        if final.exists():  # the same update saved before a crash and a resume
            shutil.rmtree(final)
        tmp.rename(final)
        if keep_last is not None:
            complete = [p for p in list_checkpoints(root) if is_complete(p)]
            for old in complete[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def copy_as_best(accelerator: Accelerator, checkpoint: Path) -> Path:
    """Copy a checkpoint to ``output_dir/best`` atomically (main process; all processes call)."""
    best = checkpoint.parent / BEST_DIR
    if accelerator.is_main_process:
        tmp = checkpoint.parent / f".tmp-{BEST_DIR}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint, tmp)
        old = checkpoint.parent / f".old-{BEST_DIR}"
        if best.exists():
            best.rename(old)
        tmp.rename(best)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return best


def load_checkpoint(accelerator: Accelerator, model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states from ``path``; return its trainer state.

    The checkpoint holds only trainable weights, so it is loaded non-strictly and then checked:
    every trainable weight of this run must be in it (a different LoRA rank, fusion adapter or
    model is an error, not a silent partial load).
    """
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{str(path)!r} is not a complete checkpoint (no {STATE_FILE})")
    saved = _saved_keys(path)
    if saved is not None:
        missing = sorted(trainable_names(model) - saved)
        if missing:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this run: it lacks {len(missing)} "
                f"trainable weights (e.g. {missing[0]!r}); resume with the same model, fusion "
                "adapter and LoRA settings, or pick a fresh output_dir"
            )
    try:
        accelerator.load_state(str(path), strict=False)
        return json.loads(state_file.read_text())  # type: ignore[no-any-return]
    except (OSError, RuntimeError, ValueError, EOFError) as err:
        # Not the loader's own text: torch's suggests weights_only=False, which would execute
        # whatever a corrupt or foreign file holds.
        raise CheckpointError(
            f"cannot load checkpoint {str(path)!r} ({type(err).__name__} while reading its "
            "files): it is truncated or corrupt; delete it to resume from the previous one"
        ) from None


def _saved_keys(path: Path) -> set[str] | None:
    file = path / "model.safetensors"
    if not file.is_file():
        return None  # a sharded engine's format: its loader checks its own keys
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {_unwrapped(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception as err:  # SafetensorError derives from Exception only
        raise CorruptCheckpointError(
            file, f"not a readable safetensors file ({type(err).__name__}): truncated or corrupt"
        ) from None
