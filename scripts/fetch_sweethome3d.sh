#!/usr/bin/env bash
# Sweet Home 3D furniture from Debian (apt-get download sweethome3d sweethome3d-furniture):
# extract every library, parse the catalogues (names, categories, licences, icons) into
# $PARTGEN_CACHE/sweethome3d/catalog.jsonl (default ~/.cache/partgen). Idempotent.
# Training libraries: default, BlendSwap-CC-0, BlendSwap-CC-BY, KatorLegaz, Reallusion.
# Scopia is reserved for evaluation: never train or tune on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ "$(id -u)" = 0 ] && ! apt-cache show sweethome3d-furniture >/dev/null 2>&1; then apt-get update -qq; fi
exec "$PY" -m partgen.data_pipeline.sweethome3d fetch "$@"
