"""``manifest.json``: what a checkpoint holds, so it can be verified, resumed and evaluated alone.

Every checkpoint the harness writes (``checkpoint-<step>/``, ``best/``, and the final adapter a
``grpo`` run saves in ``output_dir``) gets a manifest, written *last*: the model (name, family,
weight fingerprint), the fusion adapter (name, options, the plugin distribution that provides it),
the LoRA configuration, the task, the algorithm, the whole training config with its hash, and the
sha256 of every other file. ``mmrl eval --checkpoint`` rebuilds the policy from it; a resumed run
checks its config against it and verifies the files before loading them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmrl_harness.errors import MMRLError

if TYPE_CHECKING:
    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.policy import PolicyModel

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1

#: Fields a resumed run may change with ``allow_config_change``: when and what is logged, saved
#: and evaluated, never what is trained. (ppo: cadence fields move the episode boundaries, so a
#: changed run no longer replays an uninterrupted one exactly; see docs/episodic.md.)
SAFE_CHANGES = (
    "max_steps",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "report_to",
    "eval",
    "episodic.eval_every",
    "episodic.eval_episodes",
    "episodic.keep_best",
    "episodic.stop_at_success",
)
#: Fields that say where and how a run is launched, not what it is: never compared.
IGNORED_FIELDS = ("output_dir", "resume", "allow_config_change")


class ManifestError(MMRLError, ValueError):
    """A manifest cannot be read, or a checkpoint does not match it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRecord(_Strict):
    """The base model the checkpoint's weights were trained on."""

    name_or_path: str = Field(description="what the run loaded: Hub id, folder or tiny name")
    revision: str | None = Field(None, description="requested Hub revision, if any")
    fingerprint: str | None = Field(None, description="sha256 over the weight files (local)")
    family: str = Field(description="architecture family (llava, qwen2_vl, ...)")
    model_type: str = Field(description="transformers model_type")


class FusionRecord(_Strict):
    """The fusion adapter attached before LoRA."""

    name: str = Field(description="registered adapter name")
    options: dict[str, Any] = Field(default_factory=dict, description="validated options")
    distribution: str | None = Field(None, description="distribution providing the adapter")
    version: str | None = Field(None, description="that distribution's version")


class CheckpointManifest(_Strict):
    """``manifest.json`` of one checkpoint folder."""

    manifest_version: int = Field(MANIFEST_VERSION, description="format version of this file")
    harness_version: str = Field(description="mmrl-harness version that wrote it")
    step: int = Field(description="optimizer steps (updates) the weights have had")
    algorithm: str = Field(description="registered algorithm that trained it")
    model: ModelRecord
    fusion: FusionRecord
    lora: dict[str, Any] = Field(description="the PEFT LoraConfig used (as PEFT saves it)")
    task: str = Field(description="task name or YAML path")
    task_overrides: dict[str, Any] = Field(default_factory=dict, description="task overrides")
    config: dict[str, Any] = Field(description="the whole TrainConfig, as JSON")
    config_hash: str = Field(description="sha256 of the config's canonical JSON")
    files: dict[str, str] = Field(
        default_factory=dict, description="relative path -> sha256 of every other file"
    )


def canonical_json(value: Any) -> str:
    """Sorted, compact JSON: equal configs give equal text (NaN written as ``NaN``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a training config's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(config).encode()).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_template(config: TrainConfig, policy: PolicyModel) -> CheckpointManifest:
    """Everything but the step and the file hashes; built once per run (the model fingerprint
    hashes the base weights, so it is computed once)."""
    loaded = policy.loaded
    info = policy.fusion_info()
    data = config.model_dump(mode="json")
    return CheckpointManifest(
        manifest_version=MANIFEST_VERSION,
        harness_version=_harness_version(),
        step=0,
        algorithm=config.algorithm,
        model=ModelRecord(
            name_or_path=config.model,
            revision=config.model_revision,
            fingerprint=loaded.fingerprint(),
            family=loaded.anatomy.family,
            model_type=str(loaded.model.config.model_type),
        ),
        fusion=FusionRecord(
            name=info.name,
            options=info.options,
            distribution=info.distribution,
            version=info.version,
        ),
        lora=json.loads(canonical_json(policy.lora_config.to_dict())),
        task=config.task,
        task_overrides=data["task_overrides"],
        config=data,
        config_hash=config_hash(data),
    )


def _harness_version() -> str:
    from mmrl_harness import __version__

    return __version__


def write_manifest(
    folder: str | os.PathLike[str],
    template: CheckpointManifest,
    step: int,
    files: Iterable[str] | None = None,
) -> Path:
    """Hash ``files`` (default: every file under ``folder``) and write ``manifest.json`` there.

    Call it after everything else in the folder is written: its presence marks a complete
    checkpoint.
    """
    root = Path(folder)
    if files is None:
        names = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.name != MANIFEST_FILE
        )
    else:
        names = sorted(files)
    hashes = {name: file_sha256(root / name) for name in names}
    manifest = template.model_copy(update={"step": step, "files": hashes})
    path = root / MANIFEST_FILE
    tmp = root / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest.model_dump(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # even the manifest itself is never half-written
    return path


def read_manifest(folder: str | os.PathLike[str]) -> CheckpointManifest | None:
    """The folder's manifest, or None when it has none (a checkpoint from before manifests).

    A manifest that is not valid JSON or not a manifest is a ``ManifestError`` naming the file.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return CheckpointManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as err:  # JSONDecodeError is a ValueError
        why = "not valid JSON" if isinstance(err, json.JSONDecodeError) else "not a manifest"
        raise ManifestError(f"{path}: {why} (truncated or overwritten)") from None


def file_problems(
    folder: str | os.PathLike[str], manifest: CheckpointManifest, only: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """``(file, what is wrong)`` for every listed file (or those in ``only``) that is missing or
    whose sha256 differs from the manifest's; empty when the checkpoint is intact."""
    root = Path(folder)
    wanted = set(only)
    problems = []
    for name, digest in sorted(manifest.files.items()):
        if wanted and name not in wanted:
            continue
        path = root / name
        if not path.is_file():
            problems.append((name, "missing"))
        elif file_sha256(path) != digest:
            problems.append((name, "sha256 differs from the manifest (truncated or corrupted)"))
    return problems


def config_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (old value, new value)}`` for every field that differs between two
    config dumps (nested mappings are compared key by key)."""
    changed: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        if not prefix and key in IGNORED_FIELDS:
            continue
        name, a, b = f"{prefix}{key}", old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed.update(config_changes(a, b, f"{name}."))
        elif canonical_json(a) != canonical_json(b):  # NaN equals NaN here, unlike ==
            changed[name] = (a, b)
    return changed


def is_safe_change(field: str) -> bool:
    """Whether ``allow_config_change`` may accept a change of ``field`` (see ``SAFE_CHANGES``)."""
    return any(field == safe or field.startswith(safe + ".") for safe in SAFE_CHANGES)


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``"learning_rate: 0.001 -> 0.01, seed: 0 -> 1"`` for the first few changed fields."""

    def short(value: Any) -> str:
        text = canonical_json(value)
        return text if len(text) <= 60 else text[:57] + "..."

    shown = [f"{f}: {short(a)} -> {short(b)}" for f, (a, b) in list(changes.items())[:6]]
    more = f" (and {len(changes) - 6} more)" if len(changes) > 6 else ""
    return ", ".join(shown) + more
