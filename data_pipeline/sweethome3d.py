"""Sweet Home 3D furniture (Debian packages sweethome3d, sweethome3d-furniture): catalogues and models.

The default catalogue lives in sweethome3d.jar (com/eteks/sweethome3d/io/DefaultFurnitureCatalog
.properties, models and 128x128 icons under .../io/resources/); each extra library is a .sh3f zip
with a PluginFurnitureCatalog.properties. Models are OBJ + MTL whose groups are authored parts.

    python -m partgen.data_pipeline.sweethome3d fetch [--dest DIR]   # what scripts/fetch_sweethome3d.sh runs

Libraries: default, BlendSwap-CC-0, BlendSwap-CC-BY, KatorLegaz, Reallusion are for training;
Scopia is reserved for evaluation (never train or tune on it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import zipfile
from pathlib import Path

from partgen.data_pipeline.debian import unpack
from partgen.native import cache_root

TRAIN_LIBRARIES = ("default", "BlendSwap-CC-0", "BlendSwap-CC-BY", "KatorLegaz", "Reallusion")
EVAL_LIBRARIES = ("Scopia",)
PACKAGES = ("sweethome3d", "sweethome3d-furniture")
JAR = "usr/share/sweethome3d/sweethome3d.jar"
FURNITURE = "usr/share/sweethome3d/furniture"
DEFAULT_CATALOG = "com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties"


def default_root() -> Path:
    return cache_root() / "sweethome3d"


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties: key=value or key: value, '#'/'!' comments, '\\' line continuations, \\uXXXX escapes."""
    out: dict[str, str] = {}
    logical, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw.lstrip() if pending else raw.strip()
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes continues the line
            pending = line[:-1]
            continue
        pending = ""
        logical.append(line)
    for line in logical:
        sep = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        key, value = (line[:sep], line[sep + 1 :]) if sep >= 0 else (line, "")
        out[_unescape(key.strip())] = _unescape(value.strip())
    return out


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "u" and i + 6 <= len(s):
                out.append(chr(int(s[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append({"n": "\n", "t": "\t", "r": "\r", "f": "\f"}.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@dataclasses.dataclass
class CatalogEntry:
    """One piece of furniture. Paths are inside the library's archive (leading '/' removed)."""

    library: str
    index: int
    id: str
    name: str
    category: str
    model: str
    icon: str
    license: str
    creator: str
    width: float
    depth: float
    height: float
    model_rotation: list[float] | None  # row-major 3x3, as the catalogue gives it
    door_or_window: bool

    @property
    def key(self) -> str:
        """A file-system-safe unique name: library + catalogue index + id."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.id)
        return f"{self.library}-{self.index:04d}-{safe}"


def parse_catalog(text: str, library: str) -> list[CatalogEntry]:
    props = parse_properties(text)
    library_license = props.get("license", "")
    entries = []
    index = 1
    while f"id#{index}" in props or f"model#{index}" in props:

        def get(name, default="", index=index):
            return props.get(f"{name}#{index}", default)

        rotation = get("modelRotation")
        entries.append(
            CatalogEntry(
                library=library,
                index=index,
                id=get("id"),
                name=get("name"),
                category=get("category"),
                model=get("model").lstrip("/"),
                icon=get("icon").lstrip("/"),
                license=get("license", library_license) or library_license,
                creator=get("creator"),
                width=float(get("width", "0") or 0),
                depth=float(get("depth", "0") or 0),
                height=float(get("height", "0") or 0),
                model_rotation=[float(x) for x in rotation.split()] if rotation else None,
                door_or_window=get("doorOrWindow", "false").lower() == "true",
            )
        )
        index += 1
    return entries


def fetch(dest: Path | None = None) -> Path:
    """Download and extract both packages, unpack every library, write catalog.jsonl. Idempotent."""
    root = Path(dest) if dest else default_root()
    catalog_path = root / "catalog.jsonl"
    if catalog_path.exists():
        return root
    staging = unpack(PACKAGES, root / "packages")
    libs = {"default": staging / JAR}
    libs.update({p.stem: p for p in sorted((staging / FURNITURE).glob("*.sh3f"))})
    entries = []
    for library, archive in libs.items():
        out = root / "libraries" / library
        with zipfile.ZipFile(archive) as zf:
            if library == "default":
                members = [m for m in zf.namelist() if m.startswith("com/eteks/sweethome3d/io/resources/")]
                text = zf.read(DEFAULT_CATALOG).decode("latin-1")
            else:
                members = [m for m in zf.namelist() if not m.endswith(".class")]
                text = zf.read("PluginFurnitureCatalog.properties").decode("latin-1")
            for member in members:
                zf.extract(member, out)
        entries += parse_catalog(text, library)
    tmp = catalog_path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for e in entries:
            f.write(json.dumps(dataclasses.asdict(e) | {"key": e.key}) + "\n")
    tmp.replace(catalog_path)
    return root


def load_catalog(root: Path | None = None, libraries: tuple[str, ...] = TRAIN_LIBRARIES) -> list[dict]:
    """Catalogue rows of the given libraries (training ones by default), with absolute model/icon paths."""
    root = Path(root) if root else default_root()
    rows = []
    with open(root / "catalog.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if row["library"] in libraries:
                base = root / "libraries" / row["library"]
                row["model_path"] = str(base / row["model"])
                row["icon_path"] = str(base / row["icon"]) if row["icon"] else ""
                rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Sweet Home 3D furniture: fetch and list")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download (apt-get download), extract, write catalog.jsonl")
    f.add_argument("--dest", default=None)
    args = p.parse_args(argv)
    root = fetch(args.dest)
    counts: dict[str, int] = {}
    for row in load_catalog(root, TRAIN_LIBRARIES + EVAL_LIBRARIES):
        counts[row["library"]] = counts.get(row["library"], 0) + 1
    for lib, n in counts.items():
        role = "eval only" if lib in EVAL_LIBRARIES else "train"
        print(f"{lib:<16} {n:4d} models ({role})")
    print(f"catalogue: {root / 'catalog.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
