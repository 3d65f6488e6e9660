"""Flow matching, samplers and guidance (no nn modules)."""
