"""partgen: part-aware 3D generation and segmentation (Ultra3D-style Part Attention)."""

__version__ = "0.1.0"
