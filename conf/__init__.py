"""Hydra configs of partgen (folder conf/, packaged as partgen.conf)."""
