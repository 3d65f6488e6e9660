"""Triton part-attention kernels (need the triton package; imported only where they are used)."""
