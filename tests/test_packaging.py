"""The distribution maps every package into the partgen namespace and imports quietly."""

import subprocess
import sys
import tomllib

from conftest import REPO_ROOT

MAPPED = {
    "partgen": "partgen",
    "partgen.conf": "conf",
    "partgen.data_pipeline": "data_pipeline",
    "partgen.kernels": "kernels",
}


def _listed_packages():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return set(meta["tool"]["setuptools"]["packages"]), meta["tool"]["setuptools"]["package-dir"]


def test_every_package_folder_is_listed():
    listed, package_dir = _listed_packages()
    assert package_dir == MAPPED
    found = set()
    for name, folder in MAPPED.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


def test_mapped_packages_import_from_their_folders():
    import partgen.data_pipeline
    import partgen.kernels

    assert partgen.kernels.__file__.startswith(str(REPO_ROOT / "kernels"))
    assert partgen.data_pipeline.__file__.startswith(str(REPO_ROOT / "data_pipeline"))


def test_nothing_prints_at_import():
    modules = [
        "partgen.structures",
        "partgen.nn.attention",
        "partgen.nn.blocks",
        "partgen.nn.sparse_conv",
        "partgen.kernels",
        "partgen.kernels.triton.part_attention",
        "partgen.nn.point_ops",
        "partgen.models.point_transformer",
        "partgen.models.io",
        "partgen.data_pipeline.psb",
        "partgen.data_pipeline.geometric",
        "partgen.data_pipeline.inside",
        "partgen.data_pipeline.render",
        "partgen.data_pipeline.sh3d_icons",
        "partgen.data_pipeline.datasets",
        "partgen.data_pipeline.taxonomy",
        "partgen.train.losses",
        "partgen.eval.clustering",
        "partgen.cli",
    ]
    code = "import " + ", ".join(modules)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""


def test_spconv_is_touched_only_by_sparse_conv():
    offenders = [
        p.relative_to(REPO_ROOT)
        for folder in ("partgen", "data_pipeline", "kernels")
        for p in (REPO_ROOT / folder).rglob("*.py")
        if "spconv" in p.read_text() and p.name != "sparse_conv.py"
    ]
    assert offenders == []
