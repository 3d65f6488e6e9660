"""Semantic part taxonomy: authored part names (OBJ groups, materials) -> a compact class list.

semantic_class(name) -> index into CLASSES, or IGNORE (-100, cross-entropy's default ignore_index)
when the name says nothing the taxonomy maps; explain(name) -> (class, the keyword that decided).

Matching. A name is tokenised on non-letters and camelCase and lower-cased without accents
("Chair-leg_Cube.083#2" -> chair leg cube; "cabinetDoorBorder" -> cabinet door border; "Étagère"
-> etagere); each token is looked up among the KEYWORDS (English, French, Italian, Spanish,
Portuguese, German, Dutch, Swedish, Czech, Russian: the languages of these libraries' authors),
exactly, then singular (-s, -es), then as a compound ending in a COMPOUND_HEAD ("lampshade" ->
shade, "achterpoten" -> leg, "tischplatte" -> top); PHRASES match token runs ("abat jour", "bed
head"). A name matching several classes takes the first in PRIORITY: small specific parts before
what they attach to (a door handle is a handle, a door frame a frame, the GLASS material of a car
body is glass), positional words last (top, base, body). A VETO token names a part outside the
taxonomy that a class word only qualifies (Lampshade-cable, drawer_lock): IGNORE. Sweet Home 3D
rig names are read for what they say: sweethome3d_window_pane / window_mirror is glass, the bare
leaf of sweethome3d_opening_on_hinge_N / _rail_N is a door, the rest of the name decides otherwise.

Classes: what the Sweet Home 3D training libraries name often enough to learn.
    seat     what one sits on: chair, sofa, toilet, car seats
    back     backrests and headboards, and back panels (radio, bath, cabinet)
    leg      legs and feet (also the mannequin's legs)
    arm      armrests (also the mannequin's forearm)
    top      table tops, worktops, counters, desk tops
    shelf    shelves
    shade    lamp shades
    base     bases, pedestals, socles, stands
    door     doors and other moving closures: cabinet, appliance and car doors, lids, flaps, sashes
    drawer   drawers
    handle   handles, knobs, pulls
    frame    frames, rails, railings, borders, trims, supports, uprights, bed side rails
    cushion  soft furnishings: cushions, pillows, mattresses, blankets, upholstery
    glass    panes, mirrors, lenses, light bulbs, glass vessels
    wheel    wheels, tyres, casters
    plant    leaves, petals, flowers, stalks
    pot      plant pots, vases
    basin    sinks, washbasins, bathtubs
    body     the main carcass: body, casing, shell, cabinet, cupboard, wardrobe
Considered and dropped: faucet (5 parts in 3 assets), bulb (folded into glass), step/tread
(4 staircases), and an "other" class. Everything else -- "Cube.001", "Material", "component_3",
colours and materials (Chrome, wood), and also meaningful names outside the list ("Tread", "hair",
"screen") -- is IGNORE: left out of the semantic loss, still used by the class-agnostic losses. An
"other" class would need a line between "meaningful but elsewhere" and "meaningless" that names do
not draw; it would be trained on unnamed seats and legs as much as on anything else.

Limits. Names are those clean_parts keeps (a merged part keeps the name of the part it merged
into, so a "Seat" may hold unnamed neighbours); positional uses of class words are mislabelled
(Radio-dial-back, Window_1_top); object-level names (KatorLegaz object_object_material, "Table",
"Chair") say nothing about parts.

Coverage on the training libraries (partgen-annotate input=sweethome3d resolution=64
num_volume_samples=0: 517 records ok of 525, 8 models fail to load; then
`python scripts/taxonomy_report.py /tmp/sh3d64`, which also prints 30 example names per class):
    parts (after clean_parts) with a class     777/2322   33.5%
    surface samples with a class                          30.7%
    assets with at least one classed part      246/517    47.6%   (of the 463 with named parts: 53%)
    assets with >= 50% of samples classed      149/517    28.8%
    assets fully classed                        79/517    15.3%
    by library, parts / samples classed: default 66% / 68%, KatorLegaz 34% / 28%,
    BlendSwap-CC-BY 26% / 24%, BlendSwap-CC-0 25% / 22%, Reallusion 0% / 0% (unnamed characters)
    raw OBJ names (before clean_parts): 29.6% of 4001 group names (27.1% of faces), 20.3% of 1916
    material names; 28 assets have meaningless groups but meaningful materials.

    class     parts  assets  samples      class     parts  assets  samples
    seat         33      22    1.49%      handle       28      18    0.57%
    back         28      23    1.01%      frame       122      66    3.97%
    leg          72      32    1.15%      cushion      41      23    1.47%
    arm          13       7    0.27%      glass        81      57    3.48%
    top          37      32    1.73%      wheel        16       8    0.13%
    shelf        25       7    0.64%      plant        40      13    1.41%
    shade         4       4    0.50%      pot          10       9    0.57%
    base         42      30    1.43%      basin        10      10    1.10%
    door         85      58    2.94%      body         65      57    6.18%
    drawer       25      12    0.63%
The evaluation library (Scopia) was neither read nor used to tune any of this.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

CLASSES: tuple[str, ...] = (
    "seat", "back", "leg", "arm", "top", "shelf", "shade", "base", "door", "drawer",
    "handle", "frame", "cushion", "glass", "wheel", "plant", "pot", "basin", "body",
)  # fmt: skip
IGNORE = -100
NUM_CLASSES = len(CLASSES)

# a name matching several classes takes the first of these
PRIORITY: tuple[str, ...] = (
    "handle", "shade", "glass", "wheel", "drawer", "cushion", "leg", "arm", "frame", "door",
    "seat", "back", "shelf", "top", "base", "basin", "pot", "plant", "body",
)  # fmt: skip

# class -> keywords (normalised like tokens when the table is built; a keyword has one class)
# fmt: off
KEYWORDS: dict[str, tuple[str, ...]] = {
    "seat": (
        "seat", "sit", "sitting", "saddle",
        "assise", "siege",  # fr
        "sedile", "seduta",  # it
        "asiento",  # es
        "assento",  # pt
        "sitz", "sitzflache", "sitzfläche",  # de
        "zitting",  # nl
        "sits",  # sv
        "sedak", "sedadlo",  # cs
        "сиденье",  # ru
    ),
    "back": (
        "back", "backrest", "headboard", "bedhead",
        "dossier", "dosseret",  # fr
        "schienale", "spalliera", "testiera",  # it
        "respaldo", "espaldar", "respaldar", "cabecero",  # es
        "encosto", "cabeceira",  # pt
        "lehne", "ruckenlehne", "kopfteil",  # de
        "leuning", "rugleuning",  # nl
        "rygg", "ryggstod",  # sv
        "operadlo", "podhlavnik",  # cs
        "спинка",  # ru
    ),
    "leg": (
        "leg", "feet", "foot",
        "pied", "pietement",  # fr
        "gamba", "gambe",  # it
        "pata", "patas",  # es
        "perna", "pernas",  # pt
        "bein", "beine", "fuss", "fusse",  # de
        "poot", "poten", "voet",  # nl
        "noha", "nohy", "noh",  # cs
        "ножка", "ножки",  # ru
        "thigh",  # mannequin
    ),
    "arm": (
        "arm", "armrest", "forearm",
        "accoudoir", "accoudoirs",  # fr
        "bracciolo", "braccioli",  # it
        "brazo", "brazos", "reposabrazos",  # es
        "braco", "bracos",  # pt
        "armlehne", "armlehnen",  # de
        "armleuning",  # nl
        "armstod",  # sv
        "podrucka", "podrucky",  # cs
        "подлокотник",  # ru
    ),
    "top": (
        "top", "tabletop", "worktop", "countertop", "desktop", "counter",
        "plateau", "dessus",  # fr
        "tablero", "encimera",  # es
        "tampo",  # pt
        "platte", "tischplatte", "arbeitsplatte",  # de
        "tafelblad",  # nl
        "skiva",  # sv
        "deska",  # cs
        "столешница",  # ru
    ),
    "shelf": (
        "shelf", "shelves",
        "etagere", "tablette",  # fr
        "ripiano", "ripiani", "mensola",  # it
        "estante", "estantes", "balda", "baldas",  # es
        "prateleira", "prateleiras",  # pt
        "regalboden", "fachboden", "einlegeboden",  # de
        "plank",  # nl
        "hylla",  # sv
        "polica",  # cs
        "полка",  # ru
    ),
    "shade": (
        "shade", "lampshade",
        "abatjour", "coupole",  # fr
        "paralume",  # it
        "pantalla",  # es
        "cupula",  # pt
        "schirm", "lampenschirm",  # de
        "kap", "lampenkap",  # nl
        "skarm",  # sv
        "stinidlo",  # cs
        "абажур",  # ru
    ),
    "base": (
        "base", "pedestal", "plinth", "baseboard", "stand",
        "socle", "embase",  # fr
        "basamento", "zoccolo",  # it
        "peana", "zocalo",  # es
        "sockel",  # de
        "onderstel",  # nl
        "podstavec",  # cs
        "основание", "подставка",  # ru
    ),
    "door": (
        "door", "lid", "flap", "hatch",
        "porte", "battant", "couvercle",  # fr
        "porta", "anta", "ante", "sportello", "coperchio",  # it / pt
        "puerta", "tapa",  # es
        "tampa",  # pt
        "tur", "tuer", "deckel", "klappe",  # de
        "deur", "deksel",  # nl
        "dorr",  # sv
        "dvere", "dvirka", "vicko",  # cs
        "дверь", "дверца", "крышка",  # ru
    ),
    "drawer": (
        "drawer",
        "tiroir",  # fr
        "cassetto", "cassetti",  # it
        "cajon", "cajones",  # es
        "gaveta", "gavetas",  # pt
        "schublade", "schubladen", "lade",  # de / nl
        "lada",  # sv
        "suplik", "supliky",  # cs
        "ящик",  # ru
    ),
    "handle": (
        "handle", "knob", "pull", "grip",
        "poignee",  # fr
        "maniglia", "maniglie", "pomello",  # it
        "tirador", "manija", "asa",  # es
        "puxador", "macaneta",  # pt
        "griff", "knauf",  # de
        "handvat", "greep",  # nl
        "handtag",  # sv
        "uchyt", "klika",  # cs
        "ручка",  # ru
    ),
    "frame": (
        "frame", "border", "trim", "rail", "railing", "handrail", "baluster", "structure", "support", "upright",
        "cadre", "chassis", "montant", "traverse", "bord", "rampe",  # fr
        "telaio", "cornice", "struttura",  # it
        "marco", "armazon", "estructura", "bastidor",  # es
        "moldura", "estrutura", "caixilho",  # pt
        "rahmen", "gestell",  # de
        "ram", "ramme",  # sv / cs / da
        "рама", "каркас",  # ru
    ),
    "cushion": (
        "cushion", "pillow", "mattress", "matress", "blanket", "upholstery", "duvet", "bolster",
        "coussin", "oreiller", "matelas", "couette", "traversin",  # fr
        "cuscino", "cuscini", "guanciale", "materasso",  # it
        "cojin", "cojines", "almohada", "almohadon", "colchon",  # es
        "almofada", "travesseiro", "colchao", "estofamento",  # pt
        "kissen", "polster", "matratze",  # de
        "kussen", "matras",  # nl
        "kudde", "dyna", "madrass",  # sv
        "polstar", "polstare", "polstrovani", "matrace",  # cs
        "podush", "подушка", "матрас",  # ru
    ),
    "glass": (
        "glass", "pane", "mirror", "lens", "windshield", "windscreen", "plexi", "plexiglass",
        "vitre", "verre", "miroir", "glace",  # fr
        "vetro", "specchio", "cristallo",  # it
        "vidrio", "cristal", "espejo",  # es
        "vidro", "espelho",  # pt
        "glas", "scheibe", "spiegel",  # de / nl / sv
        "sklo", "zrcadlo",  # cs
        "стекло", "зеркало",  # ru
        "bulb", "ampoule", "lampadina", "bombilla", "birne", "gluhbirne", "gloeilamp", "zarovka",  # light bulbs
    ),
    "wheel": (
        "wheel", "tire", "tyre", "caster", "castor",
        "roue", "roulette",  # fr
        "ruota", "rotella",  # it
        "rueda",  # es
        "roda",  # pt
        "rad", "reifen",  # de
        "wiel",  # nl
        "hjul",  # sv
        "kolo",  # cs
        "колесо",  # ru
    ),
    "plant": (
        "plant", "leaf", "leaves", "petal", "flower", "stalk", "foliage", "branch", "bamboo",
        "feuille", "fleur",  # fr
        "foglia", "foglie", "fiore",  # it
        "flor",  # es
        "blatt", "blatter", "blume", "blumen", "pflanze",  # de
        "tulpaner", "blomma",  # sv
        "kvetina",  # cs
    ),
    "pot": (
        "pot", "vase", "planter", "flowerpot", "blumenkasten", "blumentopf",
        "vaso", "jarron", "maceta", "pote",  # it / es / pt
        "vas",  # sv
        "topf", "kruka",  # de / sv
    ),
    "basin": (
        "basin", "sink", "washbasin", "bathtub", "tub",
        "lavabo", "evier", "vasque", "baignoire", "baignore", "bac",  # fr
        "lavello", "vasca",  # it
        "fregadero", "banera",  # es
        "pia", "banheira",  # pt
        "becken", "spule", "wanne", "badewanne",  # de
        "wastafel", "gootsteen",  # nl
        "handfat",  # sv
        "umyvadlo", "drez", "vana",  # cs
        "раковина", "ванна",  # ru
    ),
    "body": (
        "body", "carcass", "casing", "housing", "shell", "hull", "cabinet", "cupboard", "wardrobe", "dresser",
        "corps", "caisson", "meuble", "carcasse",  # fr
        "scocca", "corpo",  # it / pt
        "cuerpo", "mueble", "carcasa",  # es
        "korpus", "gehause", "gehaeuse",  # de
        "kast", "behuizing",  # nl
        "stomme",  # sv
        "skrin", "teleso",  # cs
        "корпус",  # ru
    ),
}
# fmt: on

# tokens that must never match (most would otherwise match as compounds: out+door)
NOT_PARTS = frozenset({"outdoor", "outdoors", "indoor", "indoors", "shadeless", "hatchback", "nobody", "somebody"})

# multi-token keywords (matched on consecutive tokens); None blocks the tokens from matching alone
PHRASES: dict[tuple[str, ...], str | None] = {
    ("abat", "jour"): "shade",
    ("bed", "head"): "back",
    ("tete", "de", "lit"): "back",
    ("arm", "rest"): "arm",
    ("back", "rest"): "back",
    ("base", "unit"): "body",  # a kitchen base unit is a cabinet
    ("fluorescent", "tube"): "glass",
    ("steering", "wheel"): None,  # a car's steering wheel is not a road wheel
    ("top", "left"): None,  # positions, not tops: Cupboard-Top-Left-box, puzzle_top_right
    ("top", "right"): None,
}

# a name with one of these names a part outside the taxonomy that a class word only qualifies
# (Lampshade-cable, drawer_lock, Wheel_text, rotatingHinge): it stays IGNORE
VETO = frozenset(
    {"cable", "wire", "cord", "chain", "screw", "bolt", "hinge", "lock", "label", "logo", "text", "sticker"}
)

# compounds written as one word: a token ending in one of these (after a prefix of 2+ letters)
# takes its class, the head being last in English/German/Dutch compounds (lampshade, doorframe,
# tableglass, cabinetbase, achterpoten, rueckenlehne, tischplatte)
COMPOUND_HEADS: tuple[str, ...] = (
    "shade", "frame", "rail", "glass", "pane", "mirror", "base", "seat", "back", "handle", "knob", "door",
    "drawer", "shelf", "shelves", "cushion", "pillow", "wheel", "tire", "tyre", "bulb", "leaf", "vase", "sink",
    "basin", "body", "bein", "beine", "poten", "lehne", "leuning", "platte", "schirm",
)  # fmt: skip

# Sweet Home 3D rig prefixes (sweethome3d_<rig>_<n>_<rest>): a window pane or mirror is glass;
# the moving leaf of an opening is a door unless the rest of its name says otherwise (or says
# nothing positional: "sweethome3d_opening_on_hinge_1_Cube.002" of a camera is no door)
_RIG = re.compile(
    r"^sweethome3d_(window_pane_on_hinge|window_pane_on_rail|window_pane|window_mirror|opening_on_hinge|"
    r"opening_on_rail|unique_rail|hinge|rail|arm_on_ball|ball|mannequin|light)((?:_\d+)*)(?:_|$)",
    re.IGNORECASE,
)
_RIG_CLASS = {rig: "glass" for rig in ("window_pane_on_hinge", "window_pane_on_rail", "window_pane", "window_mirror")}
_RIG_OPENING = ("opening_on_hinge", "opening_on_rail")
_POSITIONAL = frozenset(
    {"in", "out", "inside", "outside", "left", "right", "front", "rear", "upper", "lower", "middle", "centre", "center"}
)


def _norm(text: str) -> str:
    """Lower case without accents ("Étagère" -> "etagere", "Fuß" -> "fuss"); Cyrillic stays Cyrillic."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _split_camel(word: str) -> list[str]:
    """camelCase and CapWords -> pieces: "cabinetDoorBorder" -> cabinet Door Border, "LCDScreen" -> LCD Screen."""
    pieces, start = [], 0
    for i in range(1, len(word)):
        a, b = word[i - 1], word[i]
        nxt = word[i + 1] if i + 1 < len(word) else ""
        if b.isupper() and (a.islower() or (a.isupper() and nxt.islower())):
            pieces.append(word[start:i])
            start = i
    pieces.append(word[start:])
    return pieces


_LETTERS = re.compile(r"[^\W\d_]+")  # runs of letters in any script: digits, '_', '.', '-', '#', ' ' split


def tokens(name: str) -> list[str]:
    """Lower-case, accent-free word tokens of a part name ("Chair-leg-front-L_Cube.083#2" -> chair leg front l cube)."""
    name = re.sub(r"#\d+$", "", name)  # clean_parts suffixes split components with #k
    return [_norm(piece) for word in _LETTERS.findall(name) for piece in _split_camel(word) if piece]


def table_problems() -> list[str]:
    """Inconsistencies of the tables above (empty when sound; the tests check it, import never fails)."""
    problems = []
    if sorted(PRIORITY) != sorted(CLASSES):
        problems.append(f"PRIORITY {PRIORITY} does not order exactly the CLASSES {CLASSES}")
    seen: dict[str, str] = {}
    for cls, words in KEYWORDS.items():
        if cls not in CLASSES:
            problems.append(f"keyword class {cls!r} is not in CLASSES")
        for word in words:
            key = _norm(word)
            if seen.setdefault(key, cls) != cls:
                problems.append(f"keyword {word!r} maps to both {seen[key]!r} and {cls!r}")
            if not _LETTERS.fullmatch(key):
                problems.append(f"keyword {word!r} is not one token")
    for phrase, cls in PHRASES.items():
        if cls is not None and cls not in CLASSES:
            problems.append(f"phrase {phrase} maps to {cls!r}, not a class")
    problems += [f"compound head {h!r} is no keyword" for h in COMPOUND_HEADS if _norm(h) not in seen]
    return problems


_TABLE = {_norm(word): cls for cls, words in KEYWORDS.items() for word in words}
_RANK = {cls: i for i, cls in enumerate(PRIORITY)}
_INDEX = {cls: i for i, cls in enumerate(CLASSES)}
_NOT_PARTS = frozenset(_norm(t) for t in NOT_PARTS)
_VETO = frozenset(_norm(t) for t in VETO)
_HEADS = tuple(sorted((_norm(h) for h in COMPOUND_HEADS), key=len, reverse=True))


@lru_cache(maxsize=65536)
def _lookup(token: str) -> tuple[str, str] | None:
    """(class, keyword) for one token: exact, then singular (-s, -es), then a compound head; None if unknown."""
    if token in _NOT_PARTS:
        return None
    candidates = [token]
    if len(token) > 3 and token.endswith("s"):
        candidates.append(token[:-1])
    if len(token) > 4 and token.endswith("es"):
        candidates.append(token[:-2])
    for cand in candidates:
        if cand in _TABLE:
            return _TABLE[cand], cand
    for cand in candidates:
        for head in _HEADS:
            if cand.endswith(head) and len(cand) - len(head) >= 2:
                return _TABLE[head], head
    return None


@lru_cache(maxsize=65536)
def explain(name: str) -> tuple[str | None, str]:
    """(class or None, why): the keyword (or rig / phrase) that decided, for audits and reports."""
    text = name.strip()
    rig_class, rig_opening = None, False
    match = _RIG.match(text)
    if match:
        rig = match.group(1).lower()
        rig_class = _RIG_CLASS.get(rig)
        rig_opening = rig in _RIG_OPENING
        text = text[match.end() :]
    toks = tokens(text)
    vetoed = [t for t in toks if t in _VETO]
    if vetoed:
        return None, f"veto:{vetoed[0]}"
    hits: list[tuple[str, str]] = []  # (class, keyword)
    if rig_class:
        hits.append((rig_class, f"sweethome3d_{match.group(1)}"))
    used = [False] * len(toks)
    for phrase, cls in PHRASES.items():
        n = len(phrase)
        for i in range(len(toks) - n + 1):
            if tuple(toks[i : i + n]) == phrase:
                used[i : i + n] = [True] * n
                if cls is not None:
                    hits.append((cls, " ".join(phrase)))
    for tok, done in zip(toks, used, strict=True):
        if not done and (hit := _lookup(tok)) is not None:
            hits.append(hit)
    if hits:
        cls, word = min(hits, key=lambda h: _RANK.get(h[0], len(_RANK)))
        return cls, word
    if rig_opening and set(toks) <= _POSITIONAL:
        return "door", f"sweethome3d_{match.group(1)}"
    return None, ""


def semantic_class(name: str) -> int:
    """Index into CLASSES of an authored part name, or IGNORE when the name says nothing we map."""
    cls, _ = explain(name)
    return IGNORE if cls is None else _INDEX[cls]
