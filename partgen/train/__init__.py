"""Training loop, distributed set-up, EMA, checkpoints."""
