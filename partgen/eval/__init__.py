"""Metrics: Chamfer, F-score, IoU, Rand index, mIoU."""
