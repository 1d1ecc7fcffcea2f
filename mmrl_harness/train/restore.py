"""Rebuild a trained policy from a checkpoint folder for evaluation (``mmrl eval --checkpoint``).

A checkpoint's ``manifest.json`` names the model, its family and weight fingerprint, and the
fusion adapter with its options, so ``--model`` and ``--fusion`` are not needed; when given they
must agree with it (an error names both values). Whatever the manifest says, the adapter file's
tensors must be exactly the ones the rebuilt model expects: a checkpoint tensor the model lacks,
or a trainable weight the checkpoint lacks, is an error listing the first few keys, never a
partial load. A checkpoint without a manifest (older harness) is evaluated as the caller says,
with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrl_harness.errors import MMRLError
from mmrl_harness.train.manifest import CheckpointManifest, file_problems, read_manifest

if TYPE_CHECKING:
    from torch import nn

    from mmrl_harness.fusion.base import FusionAdapter
    from mmrl_harness.models.loading import LoadedVLM

log = logging.getLogger("mmrl_harness")

ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: The files evaluation reads from a checkpoint; only these are verified against the manifest.
ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS)


class CheckpointMismatchError(MMRLError, ValueError):
    """A checkpoint does not fit the model or adapter it is evaluated with, or is damaged."""


@dataclass(frozen=True)
class CheckpointSetup:
    """What to load to evaluate a checkpoint: the model and the fusion adapter it was trained
    with (from its manifest), or the caller's choice for a checkpoint without one."""

    model: str
    revision: str | None
    fusion: str
    fusion_options: dict[str, Any] = field(default_factory=dict)
    manifest: CheckpointManifest | None = None


def checkpoint_setup(
    checkpoint: str | os.PathLike[str],
    *,
    model: str | None = None,
    revision: str | None = None,
    fusion: str | None = None,
    fusion_options: Mapping[str, Any] | None = None,
) -> CheckpointSetup:
    """The model and adapter to rebuild ``checkpoint`` with; explicit values must agree with
    its manifest."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CheckpointMismatchError(f"--checkpoint {str(folder)!r} is not a folder")
    manifest = read_manifest(folder)
    options = dict(fusion_options or {})
    if manifest is None:
        if model is None:
            raise CheckpointMismatchError(
                f"{folder} has no manifest.json (written by an older harness): pass --model and "
                "--fusion (with its --fusion-option values) as the run was trained"
            )
        log.warning(
            "%s has no manifest.json (written by an older harness): evaluating it as %s + %s as "
            "given; a checkpoint trained with another model or adapter cannot be detected",
            folder,
            model,
            fusion or "concat",
        )
        return CheckpointSetup(model, revision, fusion or "concat", options)
    damaged = file_problems(folder, manifest, only=ADAPTER_FILES)
    if damaged:
        name, why = damaged[0]
        raise CheckpointMismatchError(f"{folder / name}: {why}; evaluate another checkpoint")
    trained = manifest.fusion
    if fusion is not None and fusion != trained.name:
        raise CheckpointMismatchError(
            f"{folder} was trained with fusion adapter {trained.name!r}, not {fusion!r}: drop "
            f"--fusion (the manifest restores {trained.name!r}) or evaluate another checkpoint"
        )
    for key, value in options.items():
        if trained.options.get(key) != value:
            raise CheckpointMismatchError(
                f"{folder} was trained with fusion option {key}={trained.options.get(key)!r}, "
                f"not {value!r}: drop --fusion-option {key} (the manifest restores it)"
            )
    return CheckpointSetup(
        model or manifest.model.name_or_path,
        revision or manifest.model.revision,
        trained.name,
        dict(trained.options),
        manifest,
    )


def load_for_eval(
    checkpoint: str | os.PathLike[str] | None,
    *,
    model: str | None = None,
    revision: str | None = None,
    fusion: str | None = None,
    fusion_options: Mapping[str, Any] | None = None,
    dtype: str = "auto",
    device: str | None = None,
) -> tuple[LoadedVLM, FusionAdapter, CheckpointSetup]:
    """Load the model, attach the fusion adapter, and load and merge ``checkpoint`` (if any):
    from its manifest, with the checks above. Without a checkpoint, ``model`` + ``fusion``
    (default ``concat``)."""
    from mmrl_harness.fusion.base import attach_fusion
    from mmrl_harness.models.loading import load_vlm
    from mmrl_harness.registry import fusion_adapters

    if checkpoint is not None:
        setup = checkpoint_setup(
            checkpoint, model=model, revision=revision, fusion=fusion, fusion_options=fusion_options
        )
    elif model is None:
        raise CheckpointMismatchError("pass a model (or a checkpoint whose manifest names one)")
    else:
        setup = CheckpointSetup(model, revision, fusion or "concat", dict(fusion_options or {}))
    fusion_adapters.load(setup.fusion)  # a misspelt adapter fails before the model loads
    loaded = load_vlm(setup.model, revision=setup.revision, dtype=dtype, device=device)
    if checkpoint is not None:
        check_model(setup, loaded, checkpoint)
    adapter = attach_fusion(loaded.model, setup.fusion, **setup.fusion_options)
    if checkpoint is not None:
        loaded.model = load_adapter(loaded.model, checkpoint)
    return loaded, adapter, setup


def check_model(
    setup: CheckpointSetup, loaded: LoadedVLM, checkpoint: str | os.PathLike[str]
) -> None:
    """The loaded model must be the family (and, where both are known, the very weights) the
    checkpoint was trained on."""
    if setup.manifest is None:
        return
    trained = setup.manifest.model
    family = loaded.anatomy.family
    if family != trained.family:
        raise CheckpointMismatchError(
            f"{checkpoint} was trained on a {trained.family} model ({trained.name_or_path}), not "
            f"{family} ({loaded.name_or_path}): evaluate it with --model {trained.name_or_path} "
            "or leave --model out"
        )
    fingerprint = loaded.fingerprint()
    if trained.fingerprint and fingerprint and fingerprint != trained.fingerprint:
        raise CheckpointMismatchError(
            f"{checkpoint} was trained on {trained.name_or_path} with weights "
            f"{trained.fingerprint[:19]}, but {loaded.name_or_path} has weights "
            f"{fingerprint[:19]}: evaluate it with the base model it was trained on"
        )


def load_adapter(model: nn.Module, checkpoint: str | os.PathLike[str]) -> nn.Module:
    """Load the checkpoint's LoRA + adapter weights into ``model`` and merge them; every saved
    tensor must have a place in the model and every trainable weight a saved tensor."""
    from peft import PeftModel, get_peft_model_state_dict

    peft_model = PeftModel.from_pretrained(model, str(checkpoint))
    expected = set(get_peft_model_state_dict(peft_model))
    saved = _saved_keys(Path(checkpoint) / ADAPTER_WEIGHTS)
    if saved is not None:
        unexpected, missing = sorted(saved - expected), sorted(expected - saved)
        if unexpected or missing:
            parts = []
            if unexpected:
                parts.append(
                    f"{len(unexpected)} checkpoint tensors the model lacks ({_few(unexpected)})"
                )
            if missing:
                parts.append(f"{len(missing)} trainable weights missing ({_few(missing)})")
            raise CheckpointMismatchError(
                f"{checkpoint} does not fit the model it is loaded into: {'; '.join(parts)}. "
                "Evaluate it with the model, fusion adapter and LoRA settings it was trained with"
            )
    return peft_model.merge_and_unload()  # type: ignore[no-any-return]


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _saved_keys(file: Path) -> set[str] | None:
    if not file.is_file():
        return None  # a pytorch_model.bin adapter from an old PEFT: PEFT checks it
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return set(handle.keys())
    except Exception as err:  # SafetensorError derives from Exception only
        raise CheckpointMismatchError(
            f"{file}: not a readable safetensors file ({type(err).__name__}): truncated or corrupt"
        ) from None
