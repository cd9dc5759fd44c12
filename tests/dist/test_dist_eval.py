"""Sharded evaluation: kNN with a sharded train bank and gathered features equal the 1-process ones."""

import sys

import pytest
import torch
from dist_helpers import HERE, check_ok, launch

from ijepa.eval import extract_features, knn_classify
from ijepa.eval.distributed import (
    all_gather_rows,
    extract_features_distributed,
    knn_classify_distributed,
    shard_range,
)
from ijepa.models import vit_encoder


def test_shard_range_covers_the_split_in_order():
    for n in (0, 1, 5, 37):
        for world in (1, 2, 3, 8):
            shards = [shard_range(n, r, world) for r in range(world)]
            assert [i for s in shards for i in s] == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="outside"):
        shard_range(10, 2, 2)


def test_single_process_matches_the_plain_functions():
    g = torch.Generator().manual_seed(1)
    tx, ty = torch.randn(30, 6, generator=g), torch.randint(0, 4, (30,), generator=g)
    qx, qy = torch.randn(11, 6, generator=g), torch.randint(0, 4, (11,), generator=g)
    got = knn_classify_distributed(tx, ty, qx, qy, k=5, batch_size=4)
    ref = knn_classify(tx, ty, qx, qy, k=5, batch_size=4)
    assert got["world_size"] == 1
    assert {k: got[k] for k in ref} == ref
    rows = torch.arange(6.0).view(3, 2)
    assert torch.equal(all_gather_rows(rows), rows)
    with pytest.raises(ValueError, match="k must be"):
        knn_classify_distributed(tx, ty, qx, qy, k=31)


@pytest.mark.distributed
def test_two_ranks_match_one_process(tmp_path):
    cmd = [sys.executable, str(HERE / "dist_worker.py"), "eval", str(tmp_path)]
    check_ok(launch([cmd, cmd], timeout=180))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    # the same data as dist_worker.run_eval, on one process
    g = torch.Generator().manual_seed(0)
    train_x, train_y = torch.randn(37, 8, generator=g), torch.randint(0, 5, (37,), generator=g)
    test_x, test_y = torch.randn(23, 8, generator=g), torch.randint(0, 5, (23,), generator=g)
    images, labels = torch.randn(10, 3, 16, 16, generator=g), torch.arange(10)
    ref = knn_classify(train_x, train_y, test_x, test_y, k=7, batch_size=6)
    torch.manual_seed(0)
    encoder = vit_encoder("tiny", depth=1, embed_dim=48, num_heads=3, img_size=16, patch_size=4)
    feats = extract_features(encoder, [(images, labels)], ("avg",), progress=False)
    assert (
        extract_features_distributed(encoder, [(images, labels)], progress=False).keys()
        == feats.keys()
    )
    for r, got in enumerate(ranks):
        assert got["knn"]["world_size"] == 2
        assert {k: got["knn"][k] for k in ref} == ref, r
        assert torch.equal(got["feats"]["labels"], labels)
        assert torch.allclose(got["feats"]["avg"], feats["avg"], atol=1e-5)
        # uneven shards (1 row from rank 0, 2 from rank 1) come back in rank order
        assert torch.equal(got["rows"], torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))
