"""Sparse part-attention ops: the PyTorch reference and the compiled CPU / CUDA ops.

Importable as partgen.kernels (the folder kernels/ is mapped into the partgen namespace).
"""

from __future__ import annotations

from collections.abc import Callable

from partgen.kernels.reference import part_attention_reference

__all__ = ["native_op", "part_attention_reference"]


def native_op(device_type: str) -> tuple[Callable | None, str]:
    """The compiled part-attention op for a device type ("cpu" or "cuda"), or None and why not.

    The compiled ops are the subject of the kernels issue; until they are built nothing is
    returned and the attention dispatcher uses another backend.
    """
    return None, f"partgen.kernels has no compiled {device_type} part-attention op built"
