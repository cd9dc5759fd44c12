"""A rank of a multi-process test: ``dist_worker.py {train,codes} JOBS`` or ``{eval,sigreg} OUT``.

``train``: runs ``ijepa train`` once per override list in the JSON list ``JOBS``, one after the
other in this process (each joins and leaves the process group), and exits with the first non-zero
exit code. ``codes``: runs every job whatever happens and prints their exit codes as one JSON
line. ``eval``: runs the sharded evaluation of :mod:`ijepa.eval.distributed` on fixed random
data and saves this rank's results to ``OUT/rank<r>.pt``; ``sigreg``: the global SIGReg of
half of fixed embeddings per rank, its value and DDP-averaged gradient, saved likewise;
``rejoin``: joins and leaves three process groups in a row through :class:`ijepa.dist.DistContext`
while keeping every group alive (as FSDP modules returned to a caller do), rank 0 late to
leave, and saves each group's all-gathered ranks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run_train(jobs: list[list[str]]) -> int:
    from ijepa.cli import main

    for job in jobs:
        code = main(["-q", "train", *job])
        if code:
            return code
    return 0


def run_codes(jobs: list[list[str]]) -> int:
    from ijepa.cli import main

    codes = [main(["-q", "train", *job]) for job in jobs]
    print(json.dumps(codes))
    return 0


def run_eval(out: Path) -> int:
    import torch
    import torch.distributed as dist

    from ijepa.eval.distributed import (
        all_gather_rows,
        extract_features_distributed,
        knn_classify_distributed,
        shard_range,
    )
    from ijepa.models import vit_encoder

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    g = torch.Generator().manual_seed(0)
    train_x, train_y = torch.randn(37, 8, generator=g), torch.randint(0, 5, (37,), generator=g)
    test_x, test_y = torch.randn(23, 8, generator=g), torch.randint(0, 5, (23,), generator=g)
    images, labels = torch.randn(10, 3, 16, 16, generator=g), torch.arange(10)
    tr, te, im = shard_range(37), shard_range(23), shard_range(10)
    knn = knn_classify_distributed(
        train_x[tr.start : tr.stop],
        train_y[tr.start : tr.stop],
        test_x[te.start : te.stop],
        test_y[te.start : te.stop],
        k=7,
        batch_size=6,
    )
    torch.manual_seed(0)
    encoder = vit_encoder("tiny", depth=1, embed_dim=48, num_heads=3, img_size=16, patch_size=4)
    batches = [
        (images[i : min(i + 2, im.stop)], labels[i : min(i + 2, im.stop)])
        for i in range(im.start, im.stop, 2)
    ]
    feats = extract_features_distributed(encoder, batches, ("avg",), progress=False)
    rows = all_gather_rows(torch.full((rank + 1, 2), float(rank)))
    torch.save({"knn": knn, "feats": feats, "rows": rows}, out / f"rank{rank}.pt")
    dist.destroy_process_group()
    return 0


def sigreg_data() -> tuple:
    """Embeddings ``(10, 6)`` (rank r holds rows ``5r:5r+5``) and the sketch ``(6, 4)``."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 6, generator=g, dtype=torch.float64) * 0.7, torch.randn(
        6, 4, generator=g, dtype=torch.float64
    )


def run_sigreg(out: Path) -> int:
    """SIGReg of this rank's half of :func:`sigreg_data` (global statistic), with a linear
    layer's gradient averaged over the ranks as DDP does; saves value and gradient."""
    import torch
    import torch.distributed as dist

    from ijepa.train.regularizers import sigreg

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    z, dirs = sigreg_data()
    weight = torch.eye(6, dtype=torch.float64).requires_grad_()
    mine = z[5 * rank : 5 * rank + 5] @ weight
    value = sigreg(mine, dirs, across_ranks=True)
    value.backward()
    grad = weight.grad.clone()
    dist.all_reduce(grad)
    grad /= world  # DDP's average
    torch.save({"value": value.detach(), "grad": grad}, out / f"rank{rank}.pt")
    dist.destroy_process_group()
    return 0


def run_rejoin(out: Path) -> int:
    """Three groups in a row on one ``MASTER_PORT``; the old groups stay referenced."""
    import time

    import torch
    import torch.distributed as dist

    from ijepa.dist import DistContext, dist_info_from_env

    info, kept, gathered = dist_info_from_env(), [], []
    for _ in range(3):
        ctx = DistContext.start(info, torch.device("cpu"), timeout_s=60)
        kept.append(dist.group.WORLD)  # holds the group, and so its store, past close()
        gathered.append(ctx.all_gather_tensor(torch.tensor([info.rank])).flatten().tolist())
        if info.rank == 0:
            time.sleep(1.0)  # rank 0 still busy (its last checkpoint) when the others rejoin
        ctx.close()
    torch.save({"gathered": gathered}, out / f"rank{info.rank}.pt")
    return 0


if __name__ == "__main__":
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "eval":
        sys.exit(run_eval(Path(arg)))
    if mode == "sigreg":
        sys.exit(run_sigreg(Path(arg)))
    if mode == "rejoin":
        sys.exit(run_rejoin(Path(arg)))
    sys.exit((run_train if mode == "train" else run_codes)(json.loads(arg)))
