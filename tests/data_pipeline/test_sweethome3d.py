"""Sweet Home 3D catalogues: Java properties parsing and catalogue entries (no download needed)."""

from partgen.data_pipeline.sweethome3d import EVAL_LIBRARIES, TRAIN_LIBRARIES, parse_catalog, parse_properties

CATALOG = r"""# PluginFurnitureCatalog.properties
license=Creative Commons Attribution 3.0
id#1=Kator Legaz#cafe-chair
name#1=Caf\u00e9 chair
category#1=Kitchen
icon#1=/katorlegaz/cafe-chair.png
model#1=/katorlegaz/cafe-chair/cafe-chair.obj
width#1=44.5
depth#1=50
height#1=83.2
modelRotation#1=1 0 0 0 0 1 0 -1 0
doorOrWindow#1=false
creator#1=Kator Legaz

id#2=eTeks#door
name#2=Long \
    name
model#2=/door.obj
license#2=Public domain
doorOrWindow#2=true
"""


def test_properties_escapes_continuations_and_comments():
    props = parse_properties("! bang comment\n# hash\na=1\nb : two words\nc=x\\\n  y\nd=tab\\tend\ne\n")
    assert props == {"a": "1", "b": "two words", "c": "xy", "d": "tab\tend", "e": ""}


def test_catalog_entries():
    first, second = parse_catalog(CATALOG, "KatorLegaz")
    assert first.name == "Café chair" and first.category == "Kitchen"
    assert first.model == "katorlegaz/cafe-chair/cafe-chair.obj" and first.icon == "katorlegaz/cafe-chair.png"
    assert (first.width, first.depth, first.height) == (44.5, 50.0, 83.2)
    assert first.model_rotation == [1, 0, 0, 0, 0, 1, 0, -1, 0]
    assert first.license == "Creative Commons Attribution 3.0"  # the library's licence by default
    assert first.key == "KatorLegaz-0001-Kator_Legaz_cafe-chair"
    assert second.name == "Long name" and second.license == "Public domain" and second.door_or_window
    assert second.model_rotation is None


def test_scopia_is_never_a_training_library():
    assert "Scopia" in EVAL_LIBRARIES and "Scopia" not in TRAIN_LIBRARIES
