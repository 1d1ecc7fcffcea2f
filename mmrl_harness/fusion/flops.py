"""Count the FLOPs of a forward pass, attention included, to check adapters' cost reports.

``torch.utils.flop_counter`` counts matrix multiplications at two FLOPs per multiply-accumulate,
but on CPU it does not count ``scaled_dot_product_attention`` (its CPU kernel has no registered
formula), which would hide exactly the cost cross-attention adds. This registers the standard
SDPA formula for that kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter


def _cpu_sdpa_flops(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    return int(flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape))


def count_flops(run: Callable[[], Any]) -> int:
    """Total FLOPs of calling ``run()`` (matmuls and attention, 2 per multiply-accumulate)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        run()
    return int(counter.get_total_flops())
