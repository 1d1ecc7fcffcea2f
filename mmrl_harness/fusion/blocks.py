"""Small building blocks shared by the adapters: attention with a key mask, a feed-forward, a gate.

Layer names (``to_q``, ``to_kv``, ``to_out``, ``ff_in``, ``ff_out``) deliberately differ from the
decoder's (``q_proj``, ``up_proj``...), so a LoRA ``target_modules`` list written for the language
model never lands inside an adapter. Linear layers have no bias, which keeps parameter and FLOP
counts simple to check by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention from queries to a context (no positions), with a key padding mask."""

    def __init__(
        self, query_dim: int, context_dim: int, width: int, heads: int, out_dim: int | None = None
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.width = width
        self.to_q = nn.Linear(query_dim, width, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * width, bias=False)
        self.to_out = nn.Linear(width, out_dim if out_dim is not None else query_dim, bias=False)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` (batch, queries, query_dim) attends to ``context`` (batch, keys, context_dim)."""
        k, v = self.keys_values(context)
        return self.attend(x, k, v, context_valid)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys and values ``(batch, heads, keys, head_dim)`` of ``context``."""
        batch, keys, _ = context.shape
        head_dim = self.width // self.heads
        k, v = self.to_kv(context).view(batch, keys, 2, self.heads, head_dim).unbind(dim=2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def attend(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        context_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` attends to keys/values from ``keys_values``; ``context_valid`` masks padding."""
        batch, queries, _ = x.shape
        head_dim = self.width // self.heads
        q = self.to_q(x).view(batch, queries, self.heads, head_dim).transpose(1, 2)
        mask = None
        has_keys = None
        if context_valid is not None:
            has_keys = context_valid.any(dim=1)
            # A query whose keys are all masked gets NaN from softmax; let such rows attend to the
            # (zero) padding instead and zero their output below.
            mask = (context_valid | ~has_keys[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.to_out(out.transpose(1, 2).reshape(batch, queries, self.width))
        if has_keys is not None:
            out = out * has_keys[:, None, None].to(out.dtype)
        return out

    def flops(self, queries: int, keys: int) -> int:
        """Matmul FLOPs of one forward with ``queries`` queries over ``keys`` keys."""
        q_in, kv_in = self.to_q.in_features, self.to_kv.in_features
        out = self.to_out.out_features
        w = self.width
        return (
            2 * queries * q_in * w
            + 4 * keys * kv_in * w
            + 4 * queries * keys * w
            + 2 * queries * w * out
        )


class FeedForward(nn.Module):
    """``dim -> mult*dim -> dim`` MLP with GELU."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.ff_in = nn.Linear(dim, mult * dim, bias=False)
        self.ff_out = nn.Linear(mult * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.ff_out(F.gelu(self.ff_in(x)))

    def flops(self, tokens: int) -> int:
        """Matmul FLOPs over ``tokens`` positions."""
        return 4 * tokens * self.ff_in.in_features * self.ff_in.out_features


def like_embedding(module: nn.Module, embed_tokens: nn.Module) -> nn.Module:
    """``module`` moved to the device and dtype of the model's token embedding."""
    weight = embed_tokens.weight
    assert isinstance(weight, torch.Tensor)
    return module.to(device=weight.device, dtype=weight.dtype)


def zero_gate() -> nn.Parameter:
    """A scalar gate ``alpha`` used as ``tanh(alpha)``: zero at init, so the branch starts closed."""
    return nn.Parameter(torch.zeros(()))


def gate_values(prefix: str, module: nn.Module) -> dict[str, float]:
    """``{prefix/name: tanh(param)}`` for every 0-d parameter whose name ends in ``gate``."""
    return {
        f"{prefix}/{name}": float(torch.tanh(param.detach().float()))
        for name, param in module.named_parameters()
        if name.endswith("gate") and param.ndim == 0
    }
