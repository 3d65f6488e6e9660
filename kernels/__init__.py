"""Sparse part-attention ops: the PyTorch reference and the compiled CPU / CUDA ops.

Importable as partgen.kernels (the folder kernels/ is mapped into the partgen namespace).
Importing defines the op schemas (torch.ops.partgen.*); nothing is compiled until first use.
"""

from __future__ import annotations

from collections.abc import Callable

from partgen.kernels.ops import NATIVE_DTYPES, native_available, part_attention
from partgen.kernels.reference import part_attention_reference

__all__ = ["NATIVE_DTYPES", "native_available", "native_op", "part_attention", "part_attention_reference"]


def native_op(device_type: str) -> tuple[Callable | None, str]:
    """The compiled part-attention op for a device type ("cpu" or "cuda"), or None and why not.

    The returned callable takes (q, k, v, q_groups, kv_groups, scale) like the dispatcher's backends.
    """
    loaded, why_not = native_available(device_type)
    if not loaded:
        return None, why_not

    def op(q, k, v, q_groups, kv_groups, scale):
        return part_attention(q, k, v, q_groups, kv_groups, scale, validate=False)

    return op, ""
