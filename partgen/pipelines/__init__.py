"""Inference pipelines (no training code)."""
