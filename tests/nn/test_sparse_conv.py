"""Sparse convolutions equal their dense-conv twin, forward and backward, at 1 and 2 threads.

Twenty repetitions per thread count: spconv's CPU kernels race when torch runs several
threads, which this module must prevent.
"""

import pytest
import torch

from conftest import random_voxels
from partgen.nn.sparse_conv import (
    SparseDownConv3d,
    SparseInverseConv3d,
    SubMConv3d,
    dense_active_sites,
    dense_twin,
)
from partgen.structures import SparseVoxels, cu_seqlens_from_lengths

R = 16


def voxels(batch=2, n=400, channels=4, seed=0) -> SparseVoxels:
    return random_voxels([n] * batch, resolution=R, channels=channels, seed=seed, dtype=torch.float64)


def grads(out: torch.Tensor, weight: torch.Tensor, inputs):
    return torch.autograd.grad((out * weight).sum(), inputs)


def check_layer(layer, x, out, out_coords, out_res):
    """Forward and gradients (input feats, conv weight) of a sparse result against the dense twin."""
    feats = x.feats
    twin = dense_twin(layer, x, out_coords, out_res)
    torch.testing.assert_close(out.feats, twin, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(twin)
    sparse_grads = grads(out.feats, w, [feats, layer.weight])
    dense_grads = grads(twin, w, [feats, layer.weight])
    for got, want in zip(sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("threads", [1, 2])
def test_submanifold_matches_dense_twin_repeatedly(threads):
    torch.set_num_threads(threads)
    layer = SubMConv3d(4, 6).double()
    for rep in range(20):
        x = voxels(seed=rep)
        x = x.replace(feats=x.feats.requires_grad_(True))
        out = layer(x).validate()
        assert torch.equal(out.coords, x.coords)
        check_layer(layer, x, out, x.coords, R)
        assert torch.get_num_threads() == threads


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel, padding", [(2, 0), (3, 1)])
def test_down_and_inverse_match_dense_twin_repeatedly(threads, kernel, padding):
    torch.set_num_threads(threads)
    down = SparseDownConv3d(4, 5, "down", kernel_size=kernel, stride=2, padding=padding).double()
    up = SparseInverseConv3d(5, 3, "down", kernel_size=kernel).double()
    for rep in range(20):
        x = voxels(seed=100 + rep)
        x = x.replace(feats=x.feats.requires_grad_(True))
        coarse = down(x).validate()
        assert coarse.resolution == R // 2
        assert torch.equal(coarse.coords, dense_active_sites(x, kernel, 2, padding))
        check_layer(down, x, coarse, coarse.coords, coarse.resolution)
        coarse_in = coarse.replace(feats=coarse.feats.detach().requires_grad_(True))
        fine = up(coarse_in).validate()
        assert torch.equal(fine.coords, x.coords) and torch.equal(fine.part, x.part)
        check_layer(up, coarse_in, fine, x.coords, R)
        assert torch.get_num_threads() == threads


def test_threads_restored_when_input_needs_no_gradient():
    torch.set_num_threads(2)
    layer = SubMConv3d(4, 4).double()
    layer(voxels()).feats.sum().backward()  # only the weight needs a gradient
    assert torch.get_num_threads() == 2 and layer.weight.grad is not None


def test_patch_merge_takes_majority_part():
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1], [0, 2, 2, 2], [0, 3, 3, 3]], dtype=torch.int32)
    part = torch.tensor([2, 2, 1, 0, 1])
    x = SparseVoxels(torch.randn(5, 2), cu_seqlens_from_lengths([5]), coords, 4, part).validate()
    coarse = SparseDownConv3d(2, 2, "m")(x)
    assert coarse.coords.tolist() == [[0, 0, 0, 0], [0, 1, 1, 1]]
    assert coarse.part.tolist() == [2, 0]  # 2 votes for part 2; a 1-1 tie goes to the lower label


def test_strided_with_overlap_drops_parts_and_unbatches():
    x = voxels(batch=3, n=50)
    coarse = SparseDownConv3d(4, 4, "d", kernel_size=3, padding=1).double()(x).validate()
    assert coarse.part is None and coarse.batch_size == 3
    assert [int(it.coords[:, 0].max()) for it in coarse.unbatch()] == [0, 0, 0]


def test_unet_round_trip_restores_each_level():
    x = voxels()
    d1, d2 = SparseDownConv3d(4, 8, "l1").double(), SparseDownConv3d(8, 8, "l2").double()
    u2, u1 = SparseInverseConv3d(8, 8, "l2").double(), SparseInverseConv3d(8, 4, "l1").double()
    sub = SubMConv3d(8, 8).double()
    h1 = d1(x)
    h2 = sub(d2(h1))
    back1 = u2(h2)
    assert torch.equal(back1.coords, h1.coords) and back1.resolution == h1.resolution
    back0 = u1(back1.replace(feats=back1.feats + h1.feats))
    assert torch.equal(back0.coords, x.coords) and back0.resolution == R


def test_inverse_without_matching_down_conv_raises():
    with pytest.raises(ValueError, match="indice_key='nope'"):
        SparseInverseConv3d(4, 4, "nope").double()(voxels())


def test_channel_mismatch_raises():
    with pytest.raises(ValueError, match="expects 3 input channels"):
        SubMConv3d(3, 4)(voxels())


def test_eval_mode_on_cpu_gives_the_training_mode_result():
    # spconv fuses the bias in eval mode, which its CPU build refuses; partgen runs its training path
    x = random_voxels([30], resolution=8, channels=4, seed=5)
    conv = SubMConv3d(4, 6, 3)
    with torch.no_grad():
        train_out = conv(x).feats
        conv.eval()
        eval_out = conv(x).feats
    assert torch.equal(train_out, eval_out) and not conv.training and not conv.conv.training
