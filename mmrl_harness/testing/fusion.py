"""Contract checks for a fusion adapter, run on the tiny offline VLM families.

``check_fusion_adapter`` attaches the adapter to fresh copies of each tiny model and checks:

- ``options``: the class is a concrete ``FusionAdapter`` whose ``Options`` subclass
  ``FusionOptions``; the options validate, round-trip through ``config()``, and an unknown
  option is refused with ``FusionOptionsError``;
- ``identity``: attaching leaves the logits (to 1e-6) and greedy generation unchanged;
- ``batch_invariance``: with the adapter's parameters moved away from their initial values (as
  training would), each row of a left-padded batch gets the logits it gets alone;
- ``no_completion_leak``: with moved parameters, scoring prompt + completion in one forward (as
  GRPO/PPO training does, inside ``completion_boundary``) leaves the prompt's logits unchanged
  and reproduces the logits ``generate()`` sampled the completion with;
- ``flops``: ``cost(...).extra_flops_per_forward`` equals the FLOPs measured with
  ``torch.utils.flop_counter`` (attached minus plain model, one sample);
- ``lora``: with LoRA, two optimizer steps move every adapter parameter, and
  ``save_pretrained`` + ``PeftModel.from_pretrained`` on a fresh model restore them exactly.
"""

from __future__ import annotations

import copy
import functools
import tempfile
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from mmrl_harness.testing.report import ContractReport

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mmrl_harness.fusion.base import FusionAdapter
    from mmrl_harness.models.loading import LoadedVLM

#: Every check ``check_fusion_adapter`` knows, in the order it runs them.
FUSION_CHECKS = ("options", "identity", "batch_invariance", "no_completion_leak", "flops", "lora")
#: Different lengths, so a batch of both is left-padded.
QUESTIONS = ("what color is the shape ?", "how many objects are in the image ?")
NEW_TOKENS = 4


def default_families() -> tuple[str, ...]:
    """The tiny offline families every adapter is checked on (``load_vlm`` names): every
    installed family that has a tiny build, so a new family is checked without being named."""
    from mmrl_harness.models.tiny import tiny_model_names

    return tuple(sorted(tiny_model_names()))


def check_fusion_adapter(
    adapter: str | type[FusionAdapter],
    options: dict[str, Any] | None = None,
    *,
    families: Sequence[str | LoadedVLM] | None = None,
    checks: Collection[str] | None = None,
    raise_on_failure: bool = True,
) -> ContractReport:
    """Run the fusion contract checks on ``adapter`` (a registered name or a class).

    ``options`` are passed to the adapter; ``families`` are tiny model names for ``load_vlm``
    (default: every tiny family) or loaded models; ``checks`` selects from ``FUSION_CHECKS``.
    Raises ``ContractViolation`` listing the failures (unless ``raise_on_failure=False``);
    returns the report.
    """
    selected = _selected(checks)
    options = dict(options or {})
    label = adapter if isinstance(adapter, str) else (adapter.name or adapter.__name__)
    report = ContractReport(f"fusion adapter {label!r}")
    found: list[type[FusionAdapter]] = []

    def load() -> None:
        found.append(_adapter_class(adapter))

    if not report.run("loads", load).passed:
        return _finish(report, raise_on_failure)
    cls = found[0]
    if "options" in selected:
        report.run("options", lambda: _check_options(cls, options))
    for family in families if families is not None else default_families():
        name = family if isinstance(family, str) else family.name_or_path
        for check in (c for c in FUSION_CHECKS if c in selected and c != "options"):
            run = functools.partial(_CHECKS[check], cls, options, family)
            report.run(f"{check} [{name}]", run)
    return _finish(report, raise_on_failure)


def _finish(report: ContractReport, raise_on_failure: bool) -> ContractReport:
    if raise_on_failure:
        report.raise_for_failures()
    return report


def _selected(checks: Collection[str] | None) -> set[str]:
    from mmrl_harness.fusion.base import FusionOptionsError

    if checks is None:
        return set(FUSION_CHECKS)
    unknown = sorted(set(checks) - set(FUSION_CHECKS))
    if unknown:
        raise FusionOptionsError(
            f"unknown fusion contract check(s) {unknown}; choose from {list(FUSION_CHECKS)}"
        )
    return set(checks)


def _adapter_class(adapter: str | type[FusionAdapter]) -> type[FusionAdapter]:
    """The adapter class, validated like an entry-point plugin."""
    from mmrl_harness.fusion.base import validate_plugin
    from mmrl_harness.registry import PluginInfo, fusion_adapters

    if isinstance(adapter, str):
        return fusion_adapters.load(adapter)  # type: ignore[no-any-return]
    info = PluginInfo(getattr(adapter, "name", "") or "?", "fusion", "<class>", "<local>", "-")
    fusion_adapters._check_api(adapter, info)
    validate_plugin(adapter, info)
    return adapter


@functools.cache
def _load(name: str) -> LoadedVLM:
    from mmrl_harness.models.loading import load_vlm

    return load_vlm(name)


def _loaded(family: str | LoadedVLM) -> LoadedVLM:
    return _load(family) if isinstance(family, str) else family


def _attached(
    cls: type[FusionAdapter], options: dict[str, Any], loaded: LoadedVLM
) -> tuple[nn.Module, FusionAdapter]:
    model = copy.deepcopy(loaded.model)
    adapter = cls(**options)
    adapter.attach(model)
    return model, adapter


def _inputs(loaded: LoadedVLM, rows: Sequence[int] = (0, 1)) -> dict[str, torch.Tensor]:
    """A (left-padded) batch of the given rows: one image and one question each."""
    from PIL import Image

    from mmrl_harness.models.generation import build_inputs

    colors = [(255, 0, 0), (0, 0, 255)]
    images = [Image.new("RGB", (32, 32), colors[r]) for r in rows]
    return dict(build_inputs(loaded, images, [QUESTIONS[r] for r in rows]))


def _positioned(loaded: LoadedVLM, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    from mmrl_harness.models.generation import add_position_ids

    return add_position_ids(loaded, dict(inputs))


def _logits(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return model(**inputs).logits  # type: ignore[no-any-return]


def _generate(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    import torch

    # min_new_tokens: a random tiny model may end its turn at once, skipping the decode steps.
    with torch.no_grad():
        return model.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _move_parameters(model: nn.Module, adapter: FusionAdapter, seed: int = 0) -> None:
    """Move the adapter's parameters as training would: gates and scales open, weights shift."""
    import torch

    from mmrl_harness.models.anatomy import get_submodule

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for path in adapter.trainable_module_names(model):
            for param in get_submodule(model, path).parameters():
                scale = 0.5 if param.ndim <= 1 else 0.05
                noise = torch.randn(param.shape, generator=generator) * scale
                param.add_(noise.to(param.device, param.dtype))


# -- the checks -------------------------------------------------------------------------------


def _check_options(cls: type[FusionAdapter], options: dict[str, Any]) -> str:
    from mmrl_harness.fusion.base import FusionOptionsError

    adapter = cls(**options)
    config = adapter.config()
    again = cls(**config["options"]).config()
    assert again == config, f"config() does not round-trip: {config} became {again}"
    try:
        cls(**options, mmrl_contract_unknown_option=1)
    except FusionOptionsError:
        return ""
    raise AssertionError(
        "an unknown option was accepted; Options must subclass FusionOptions (extra='forbid')"
    )


def _check_identity(cls: type[FusionAdapter], options: dict[str, Any], family: Any) -> str:
    loaded = _loaded(family)
    inputs = _inputs(loaded)
    before = _logits(loaded.model, _positioned(loaded, inputs))
    expected = _generate(loaded.model, inputs).sequences
    model, _ = _attached(cls, options, loaded)
    diff = _max_diff(_logits(model, _positioned(loaded, inputs)), before)
    # Zero gates add exactly 0 to the same activations on the same kernels; 1e-6 (~10 float32
    # ulps at these logit magnitudes) only allows a path that regroups the same sums.
    assert diff <= 1e-6, (
        f"attaching changed the logits by up to {diff:.3g} (allowed 1e-6): start every new "
        "pathway behind a zero-initialised gate so the model is unchanged at initialisation"
    )
    got = _generate(model, inputs).sequences
    assert bool((got == expected).all()), "attaching changed greedy generation"
    return f"max |logit change| {diff:.2g}"


def _check_batch_invariance(cls: type[FusionAdapter], options: dict[str, Any], family: Any) -> str:
    loaded = _loaded(family)
    model, adapter = _attached(cls, options, loaded)
    _move_parameters(model, adapter)
    batch = _positioned(loaded, _inputs(loaded))
    batched = _logits(model, batch)
    worst = 0.0
    for row in (0, 1):
        alone = _logits(model, _positioned(loaded, _inputs(loaded, rows=(row,))))[0]
        worst = max(worst, _max_diff(batched[row, -alone.shape[0] :], alone))
    # Batched rows run in larger matrices: another summation order, float32 rounding through a
    # few layers (~1e-5); 1e-4 leaves a margin, while pooling padding moves logits by ~1e-1.
    assert worst <= 1e-4, (
        f"a row's logits depend on the batch it is in (left padding, other rows) by up to "
        f"{worst:.3g} (allowed 1e-4): pool text over FusionInputs.prompt_mask (or "
        "attention_mask), never over every position"
    )
    return f"max |logit difference| {worst:.2g}"


def _with_completion(
    inputs: dict[str, torch.Tensor], completion: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``inputs`` with ``completion`` ids appended, as a training forward scores them."""
    import torch

    prompt_ids = inputs["input_ids"]
    out = dict(inputs)
    for key, value in inputs.items():
        # Per-token side inputs (Qwen2-VL's mm_token_type_ids): completion tokens are text, 0.
        if key not in ("input_ids", "attention_mask") and value.shape[:2] == prompt_ids.shape:
            out[key] = torch.cat([value, value.new_zeros(completion.shape)], dim=1)
    out["input_ids"] = torch.cat([prompt_ids, completion], dim=1)
    mask = inputs["attention_mask"]
    out["attention_mask"] = torch.cat([mask, torch.ones_like(completion, dtype=mask.dtype)], 1)
    return out


def _check_no_completion_leak(
    cls: type[FusionAdapter], options: dict[str, Any], family: Any
) -> str:
    import torch

    from mmrl_harness.fusion.image_context import completion_boundary

    loaded = _loaded(family)
    model, adapter = _attached(cls, options, loaded)
    _move_parameters(model, adapter)
    prompt = _inputs(loaded)
    length = prompt["input_ids"].shape[1]
    generated = _generate(model, prompt)
    full = _positioned(loaded, _with_completion(prompt, generated.sequences[:, length:]))
    with completion_boundary(model, length):
        scored = _logits(model, full)
    alone = _logits(model, _positioned(loaded, prompt))
    real = prompt["attention_mask"].bool()
    prompt_diff = _max_diff(scored[:, :length][real], alone[real])
    # Causal attention: appended tokens cannot reach prompt positions except through fusion;
    # only the matrix shapes change (float32 summation order, ~1e-6), so 1e-4 is generous.
    assert prompt_diff <= 1e-4, (
        f"appending completion tokens changed the prompt's logits by up to {prompt_diff:.3g}: "
        "the completion leaks into the prompt. Condition on FusionInputs.prompt_mask only"
    )
    sampled = torch.stack(generated.logits, dim=1)
    gen_diff = _max_diff(scored[:, length - 1 : -1], sampled)
    # A cached decode step sums the same terms in another order (~1e-5 through a few layers).
    assert gen_diff <= 1e-4, (
        f"the training forward over prompt + completion gives logits up to {gen_diff:.3g} away "
        "from those generate() sampled with: training log-probs would not match generation"
    )
    return f"prompt {prompt_diff:.2g}, completion vs generate {gen_diff:.2g}"


def _check_flops(cls: type[FusionAdapter], options: dict[str, Any], family: Any) -> str:
    from mmrl_harness.fusion.flops import count_flops

    loaded = _loaded(family)
    inputs = _inputs(loaded, rows=(0,))
    model, adapter = _attached(cls, options, loaded)
    measured = count_flops(lambda: _logits(model, inputs)) - count_flops(
        lambda: _logits(loaded.model, inputs)
    )
    image_id = adapter.anatomy(model).image_token_id(model)
    image_tokens = int((inputs["input_ids"] == image_id).sum())
    text_tokens = int(inputs["input_ids"].shape[1]) - image_tokens
    reported = adapter.cost(model, image_tokens, text_tokens).extra_flops_per_forward
    assert reported == measured, (
        f"cost(model, {image_tokens}, {text_tokens}).extra_flops_per_forward is {reported:,} "
        f"but a forward measured {measured:,} extra FLOPs (torch.utils.flop_counter: matmuls "
        "and attention, 2 per multiply-accumulate)"
    )
    return f"{measured:,} extra FLOPs"


def _adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable copies PEFT keeps of the adapter modules."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "modules_to_save" in n}


def _train_two_steps(peft_model: nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    import torch
    import torch.nn.functional as F

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    peft_model.train()
    for _ in range(2):  # zero-init gates block every other gradient until the first step
        logits = peft_model(**inputs).logits[:, :-1]
        loss = F.cross_entropy(logits.flatten(0, 1), inputs["input_ids"][:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()


def _check_lora(cls: type[FusionAdapter], options: dict[str, Any], family: Any) -> str:
    import torch
    from peft import LoraConfig, PeftModel

    from mmrl_harness.fusion.lora import apply_lora

    loaded = _loaded(family)
    model, adapter = _attached(cls, options, loaded)
    peft_model = apply_lora(model, adapter, LoraConfig(r=4, lora_alpha=8, target_modules=LORA))
    initial = _adapter_tensors(peft_model)
    if adapter.trainable_module_names(model):
        assert initial, "trainable_module_names lists modules PEFT does not train or save"
    inputs = _inputs(loaded)
    _train_two_steps(peft_model, inputs)
    trained = _adapter_tensors(peft_model)
    unmoved = [n for n in trained if torch.equal(trained[n], initial[n])]
    assert not unmoved, f"adapter parameters did not train in 2 steps: {unmoved[:5]}"
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)  # type: ignore[operator]
        fresh, _ = _attached(cls, options, loaded)
        restored = PeftModel.from_pretrained(fresh, tmp)
    got = _adapter_tensors(restored)
    assert got.keys() == trained.keys(), "restored adapter modules differ from the saved ones"
    changed = [k for k, v in trained.items() if not torch.equal(got[k], v)]
    assert not changed, f"restored adapter parameters differ from the saved ones: {changed[:5]}"
    # Same weights, same inputs, same kernels: exactly equal.
    assert torch.equal(_logits(restored, inputs), _logits(peft_model, inputs)), (
        "the restored model's logits differ from the trained model's"
    )
    return f"{len(trained)} adapter tensor(s) trained and restored"


#: LoRA targets every family's language model has.
LORA = ["q_proj", "v_proj"]

_CHECKS: dict[str, Callable[[type[FusionAdapter], dict[str, Any], Any], str]] = {
    "identity": _check_identity,
    "batch_invariance": _check_batch_invariance,
    "no_completion_leak": _check_no_completion_leak,
    "flops": _check_flops,
    "lora": _check_lora,
}
