"""Semantic part taxonomy: tokenising, multilingual keywords, priorities, IGNORE."""

import pytest

from partgen.data_pipeline import taxonomy
from partgen.data_pipeline.taxonomy import CLASSES, IGNORE, PRIORITY, explain, semantic_class, tokens


def cls(name: str) -> str | None:
    index = semantic_class(name)
    return None if index == IGNORE else CLASSES[index]


def test_tables_are_consistent():
    assert taxonomy.table_problems() == []
    assert sorted(PRIORITY) == sorted(CLASSES)
    assert len(set(CLASSES)) == len(CLASSES)
    assert IGNORE < 0  # never a class index; F.cross_entropy's default ignore_index
    assert set(taxonomy.KEYWORDS) <= set(CLASSES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Chair-leg-front-L_Cube.083#2", ["chair", "leg", "front", "l", "cube"]),
        ("cabinetDoorBorder", ["cabinet", "door", "border"]),
        ("LCDScreen", ["lcd", "screen"]),
        ("Étagère_3", ["etagere"]),
        ("Fuß", ["fuss"]),
        ("Assise_&_Dossier_1", ["assise", "dossier"]),
        ("Material.001", ["material"]),
        ("12_oz_glass", ["oz", "glass"]),
        ("", []),
    ],
)
def test_tokens(name, expected):
    assert tokens(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # English, with Blender/exporter suffixes, digits, camelCase and split-component suffixes
        ("Seat", "seat"),
        ("Chair-seat_Plane.029", "seat"),
        ("tableLeg_Cube.001#1", "leg"),
        ("Table-Legs_Plane.032", "leg"),
        ("Couch_Arms_Cube.002", "arm"),
        ("Table-top_Plane.015", "top"),
        ("Worktop-Right.001_Cube.008", "top"),
        ("metal_shelf_3", "shelf"),
        ("Lamp-shade_Cylinder.014", "shade"),
        ("Lampshade", "shade"),
        ("Base#1", "base"),
        ("cabinetDoor", "door"),
        ("drawer_container.003_Cube.009", "drawer"),
        ("Kettle-handle", "handle"),
        ("Shower_hot_knob", "handle"),
        ("window_frame", "frame"),
        ("upper_cushion_Cube.010", "cushion"),
        ("LeftPillow", "cushion"),
        ("Frosted_Glass", "glass"),
        ("Wheel_tyre_Plane.019", "wheel"),
        ("Leaf_Plane.029", "plant"),
        ("Pot_Cylinder", "pot"),
        ("Sink_Circle", "basin"),
        ("cabinetBody", "body"),
        # French, German, Italian, Spanish, Portuguese, Dutch, Czech
        ("Pied_2", "leg"),
        ("Assise", "seat"),
        ("Dossier_1", "back"),
        ("Accoudoir", "arm"),
        ("Matelas", "cushion"),
        ("Etagere_5", "shelf"),
        ("Plateau", "top"),
        ("Corps", "body"),
        ("sweethome3d_opening_on_hinge_1_Porte", "door"),
        ("Robinet_gauche", None),
        ("Rückenlehne", "back"),
        ("Tischbein", "leg"),
        ("Stuhlbeine", "leg"),
        ("Tischplatte", "top"),
        ("Schublade_2", "drawer"),
        ("Lampenschirm", "shade"),
        ("gamba_posteriore", "leg"),
        ("schienale", "back"),
        ("cassetto", "drawer"),
        ("maniglia", "handle"),
        ("vetro", "glass"),
        ("espaldar_sofa_Plane.003", "back"),
        ("sofa-brazos_Plane.002", "arm"),
        ("sofa-cojin_Plane.001", "cushion"),
        ("cajón", "drawer"),
        ("vidro_black", "glass"),
        ("tampa", "door"),
        ("Zitting_Plane.082", "seat"),
        ("Achterpoten_Cube.355", "leg"),
        ("zidle.desig.sedak_Circle.002", "seat"),
    ],
)
def test_known_names(name, expected):
    assert cls(name) == expected, explain(name)


@pytest.mark.parametrize(
    "name",
    [
        "Material1",
        "Material.002",
        "group_0",
        "Object12",
        "default",
        "Cube",
        "Cube_Cube.001",
        "Cylinder.013_Cylinder.018",
        "component_3",
        "01-Default",
        "objpolySurface1023",
        "Chrome",
        "wood_NONE",
        "unnamed_4",
        "12",
        "",
        "Lamp_outdoor_01",  # out+door is not a door
        "Sedan02_bottom_Sedan02_bottom_shadeless_black",  # shadeless is a material, not a shade
    ],
)
def test_meaningless_names_are_ignored(name):
    assert semantic_class(name) == IGNORE


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("door_handle", "handle"),  # a handle on a door is a handle
        ("sweethome3d_opening_on_hinge_1_handle", "handle"),
        ("Door_frame_Door_frame_PAINT_gloss_white", "frame"),
        ("Exterior_doorframe", "frame"),
        ("Sedan02_body_Sedan02_body_GLASS", "glass"),  # object_object_material: the glass of the body
        ("BackLegs.001_Cube.003", "leg"),
        ("CushionBack_Cube.009", "cushion"),
        ("IKEA_foot_cushion", "cushion"),
        ("Cupboard-Top-Left-box_Cube.004", "body"),  # top-left is a position
        ("Base-unit-Box-Right_Cube.002", "body"),  # a kitchen base unit is a cabinet
        ("Lampshade-cable_Cylinder.015", None),  # the cable of the shade
        ("drawer_lock_Cube.002", None),
        ("Steering_wheel_Steering_wheel_Interior", None),
    ],
)
def test_priority_phrases_and_vetoes(name, expected):
    assert cls(name) == expected, explain(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sweethome3d_window_pane", "glass"),
        ("sweethome3d_window_pane_on_hinge_1#1", "glass"),
        ("sweethome3d_window_mirror", "glass"),
        ("sweethome3d_opening_on_hinge_1", "door"),  # the bare leaf of an opening
        ("sweethome3d_opening_on_hinge_2_out", "door"),
        ("sweethome3d_opening_on_rail_3_drawer", "drawer"),
        ("sweethome3d_opening_on_hinge_1_Cube.002_Cube.002", None),  # a camera head, not a door
        ("sweethome3d_hinge_1", None),
        ("sweethome3d_mannequin_left_leg", "leg"),
    ],
)
def test_sweethome3d_rig_names(name, expected):
    assert cls(name) == expected, explain(name)


def test_explain_names_the_keyword():
    assert explain("Table-Legs_Plane.032") == ("leg", "leg")
    assert explain("Lampshade") == ("shade", "lampshade")
    assert explain("Material.001") == (None, "")
