"""Training tasks: what a model learns from which data (datasets, losses, validation metrics)."""
