"""scripts/eval_generate.py --split train-loo: a training icon is judged as a new one, its own shape
left out of the generator's reference bank (as a reference and as a neighbour whose part count counts)."""

import types

import torch

from conftest import load_script
from partgen.pipelines.generate import DEFAULT_MODELS
from partgen.pipelines.references import BANK_FILE, ReferenceBank


def test_leave_one_out_hides_the_scored_icons_own_shape_from_the_bank():
    bank = ReferenceBank.load(DEFAULT_MODELS / BANK_FILE)
    generator = types.SimpleNamespace(layout=types.SimpleNamespace(references=bank))
    own = lambda i: bank.distances(bank.embeddings[i], bank.descriptors[i])  # noqa: E731
    picks = [3, 100, len(bank) - 1]  # 100's own shape has 1 part, its nearest other 8: hiding shows
    assert [int(own(i).argmin()) for i in picks] == picks  # each icon's nearest is its own shape
    before = {i: own(i) for i in picks}
    leave_out = {"index": {k: i for i, k in enumerate(bank.keys)}, "key": None}
    load_script("eval_generate").leave_one_out(generator, leave_out)
    assert torch.equal(own(3), before[3])  # no key scored yet: nothing hidden
    for i in picks:
        leave_out["key"] = bank.keys[i]
        d = own(i)
        assert d[i] == float("inf") and int(d.argmin()) != i
        rest = torch.arange(len(bank)) != i
        assert torch.equal(d[rest], before[i][rest])  # the other shapes keep their distances
        # nor does the part count read its own shape's: it is the count of the 1 nearest other shape
        nearest_other = int(bank.embedding_distances(bank.embeddings[i]).argmin())
        expected = min(len(bank.meshes[nearest_other].part_names), 8)
        assert nearest_other != i and bank.part_count(bank.embeddings[i], neighbours=1) == expected
