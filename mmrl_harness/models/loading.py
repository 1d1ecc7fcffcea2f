"""Load any supported VLM (a Hub id, a local folder, or a tiny offline build) with its processor.

One code path for all three: ``AutoConfig`` first (so an unsupported family fails before any
weights are read), then ``AutoModelForImageTextToText`` and ``AutoProcessor`` — or the processor
class the family's anatomy names, where the stock one needs torchvision.
"""

from __future__ import annotations

import hashlib
import os
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoProcessor

from mmrl_harness.errors import InputError, MMRLError
from mmrl_harness.models.anatomy import Anatomy, UnsupportedArchitectureError, anatomy_for

# Re-exported for existing imports; it now lives with the rest of its family.
from mmrl_harness.models.families.qwen2_vl import (
    Qwen2VLImageOnlyProcessor as Qwen2VLImageOnlyProcessor,
)
from mmrl_harness.models.tiny import build_tiny_vlm, tiny_model_names

if TYPE_CHECKING:
    import torch

#: Top-level files of a model folder that hold its weights (the fingerprint hashes exactly
#: these; a Trainer's optimizer.pt or training_args.bin beside them are not the model).
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.gguf")

_DTYPES = ("auto", "float32", "float16", "bfloat16")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class ModelNotFoundError(MMRLError, ValueError):
    """The name is neither a local model folder, a reachable Hub id, nor a tiny model name."""


@dataclass
class LoadedVLM:
    """A loaded model with everything needed to prompt it and to say exactly which model it was.

    Attributes:
        model: the ``*ForConditionalGeneration`` model, in eval mode.
        processor: its processor (tokenizer + image processor + chat template).
        anatomy: where the model's parts live (see ``mmrl_harness.models.anatomy``).
        name_or_path: what the caller asked for (``"tiny-llava"``, a Hub id, or a folder).
        revision: the requested Hub revision, or None.
        commit_hash: the Hub commit the files came from; None for local folders.
        source_dir: the local folder holding the files (Hub cache snapshot or the given folder).
    """

    model: Any
    processor: Any
    anatomy: Anatomy
    name_or_path: str
    revision: str | None
    commit_hash: str | None
    source_dir: Path | None
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer."""
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return self.model.device  # type: ignore[no-any-return]

    def fingerprint(self) -> str | None:
        """``sha256:…`` over the weight files (computed once, on first call), or None if remote."""
        if self._fingerprint is None and self.source_dir is not None:
            self._fingerprint = model_fingerprint(self.source_dir)
        return self._fingerprint

    def provenance(self) -> dict[str, Any]:
        """What a results file records about the model."""
        return {
            "name_or_path": self.name_or_path,
            "revision": self.revision,
            "commit_hash": self.commit_hash,
            "family": self.anatomy.family,
            "model_type": self.model.config.model_type,
            "fingerprint": self.fingerprint(),
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
        }


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over a model folder's weight files (names and bytes, in sorted order)."""
    folder = Path(path)
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise ModelNotFoundError(
            f"no weight files ({', '.join(WEIGHT_PATTERNS)}) in {str(folder)!r}; "
            "fingerprint a folder written by save_pretrained"
        )
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def load_vlm(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> LoadedVLM:
    """Load a VLM and its processor from a Hub id, a local folder, or a tiny name (``tiny-llava``).

    Tiny names (``tiny_model_names()``: one per registered family with a tiny build) are built
    offline on first use (see ``build_tiny_vlm``). ``HF_HUB_OFFLINE=1`` is
    honoured by the Hub client: only cached Hub models load then. The model is put in eval mode.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    name = os.fspath(name_or_path)
    torch_dtype = _dtype(dtype)  # a typo fails before anything is built or read
    source = _resolve_source(name)
    hub_kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except OSError as err:  # HFValidationError is an OSError here, like "not found" and offline
        raise ModelNotFoundError(_not_found_message(name, err)) from err
    except ValueError as err:  # a model_type this transformers does not know
        raise UnsupportedArchitectureError(
            f"cannot read the config of {name!r}: {_first_line(err)} Upgrade transformers, or "
            "pass trust_remote_code=True if the checkpoint ships its own modelling code"
        ) from err
    anatomy = anatomy_for(config)  # an unsupported family fails before any weight is read

    model: Any = AutoModelForImageTextToText.from_pretrained(
        source,
        config=config,
        dtype=torch_dtype,
        attn_implementation=attn_implementation,
        **hub_kwargs,
    )
    if device is not None:
        model.to(device)
    model.eval()
    processor = _load_processor(source, anatomy, hub_kwargs)
    return LoadedVLM(
        model=model,
        processor=processor,
        anatomy=anatomy,
        name_or_path=name,
        revision=revision,
        commit_hash=getattr(config, "_commit_hash", None),
        source_dir=_source_dir(source, revision),
    )


def _resolve_source(name: str) -> str:
    """A local folder or Hub id to hand to transformers; tiny names are built here."""
    tiny_names = tiny_model_names()
    if name in tiny_names:
        return str(build_tiny_vlm(tiny_names[name]))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{name!r} is a folder but holds no config.json; point at a folder written by "
                "save_pretrained (config.json, weights, processor files)"
            )
        return str(path)
    if path.exists():
        raise ModelNotFoundError(
            f"{name!r} is a file; pass the model *folder* written by save_pretrained, a Hub id, "
            f"or one of {', '.join(tiny_names)}"
        )
    if not _HUB_ID.match(name) or name.startswith((".", "~")) or os.sep in name.replace("/", ""):
        raise ModelNotFoundError(
            f"no model folder at {name!r} (and it is not a Hub id like 'org/name'); check the "
            f"path, or use {' or '.join(tiny_names)}, which are built offline"
        )
    return name


def _not_found_message(name: str, err: OSError) -> str:
    from huggingface_hub import constants

    why = (
        "HF_HUB_OFFLINE is set and it is not in the local Hub cache"
        if constants.is_offline_mode()
        else "the Hub has no such repository, it is gated, or the Hub is unreachable"
    )
    return (
        f"cannot load model {name!r}: not a local folder and not loadable from the Hugging Face "
        f"Hub ({why}: {_first_line(err)}). Pass a local save_pretrained folder, a cached Hub id, or "
        f"{' / '.join(tiny_model_names())} (built offline, no download)"
    )


def _first_line(err: Exception) -> str:
    """The first line of an error message: ours are one line, transformers' are paragraphs."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    if not isinstance(dtype, str):
        return dtype
    if dtype not in _DTYPES:
        raise InputError(
            f"unsupported dtype {dtype!r}; use one of {', '.join(_DTYPES)} or a torch.dtype"
        )
    if dtype == "auto":
        return "auto"
    import torch

    return getattr(torch, dtype)  # type: ignore[no-any-return]


def _load_processor(source: str, anatomy: Anatomy, hub_kwargs: dict[str, Any]) -> Any:
    if anatomy.processor_class is None:
        return AutoProcessor.from_pretrained(source, **hub_kwargs)
    # The checkpoint names the stock class (which may need torchvision); the anatomy's wins.
    processor_cls = pkgutil.resolve_name(anatomy.processor_class)
    return processor_cls.from_pretrained(source, **hub_kwargs)


def _source_dir(source: str, revision: str | None) -> Path | None:
    """The local folder the files were read from (a Hub cache snapshot for Hub ids)."""
    if Path(source).is_dir():
        return Path(source)
    from transformers.utils import cached_file

    config_file = cached_file(
        source, "config.json", revision=revision, _raise_exceptions_for_missing_entries=False
    )
    return Path(config_file).parent if config_file else None
