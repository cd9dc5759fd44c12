"""Single-process pieces of the distributed path: sharding, state conversion, recompute, env."""

import pytest
import torch

from ijepa.config import Config, ConfigError, apply_overrides
from ijepa.data import ImageSet
from ijepa.dist import (
    DistContext,
    DistInfo,
    DistributedError,
    backend_for,
    dist_info_from_env,
    is_comm_error,
)
from ijepa.models import build_models
from ijepa.train.batches import MemoryBatches, _EpochSampler
from ijepa.train.guards import translated_errors
from ijepa.train.loop import train
from ijepa.train.optim import build_optimizer
from ijepa.train.parallel import (
    enable_activation_checkpointing,
    optimizer_param_names,
    optimizer_state_to_ids,
    optimizer_state_to_names,
    wrap_models,
)
from ijepa.train.step import forward_loss

ARGS = {
    "model_name": "vit_tiny",
    "img_size": 16,
    "patch_size": 4,
    "in_chans": 3,
    "pred_depth": 1,
    "pred_emb_dim": 24,
    "enc_depth": 2,
    "enc_emb_dim": 48,
    "enc_num_heads": 3,
}


def _imageset(n=40):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 20, 24), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 4, list("abcd"), (0.5,) * 3, (0.25,) * 3, "t")


@pytest.mark.parametrize("world", [2, 4])
def test_memory_batches_global_batch_does_not_depend_on_world_size(world):
    data, b = _imageset(), 3
    one = MemoryBatches(
        data, batch_size=b * world, crop_size=8, crop_scale=(0.3, 1.0), hflip=True, seed=5
    )
    ranks = [
        MemoryBatches(
            data,
            batch_size=b,
            crop_size=8,
            crop_scale=(0.3, 1.0),
            hflip=True,
            seed=5,
            rank=r,
            world_size=world,
        )
        for r in range(world)
    ]
    assert {r.iterations_per_epoch for r in ranks} == {one.iterations_per_epoch}
    for step in (0, 1, one.iterations_per_epoch + 1):  # also the next epoch's order
        images, labels = one.get(step)
        parts = [r.get(step) for r in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), images)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)
    with pytest.raises(ValueError, match="global batch of 44"):
        MemoryBatches(
            data,
            batch_size=11,
            crop_size=8,
            crop_scale=(0.3, 1.0),
            hflip=False,
            seed=0,
            rank=0,
            world_size=4,
        )


def test_file_sampler_slices_the_same_global_batches():
    n, b, world = 50, 4, 3
    one = _EpochSampler(n, seed=1, rank=0, world_size=1, batch_size=b * world)
    ranks = [_EpochSampler(n, seed=1, rank=r, world_size=world, batch_size=b) for r in range(3)]
    for s in (one, *ranks):
        s.epoch, s.start = 2, 1  # a resume at iteration 1 of epoch 2
    flat = list(one)
    per_rank = [list(r) for r in ranks]
    assert len(flat) == len(one) == (n // (b * world) - 1) * b * world
    for i in range(len(flat) // (b * world)):
        merged = [x for r in per_rank for x in r[i * b : (i + 1) * b]]
        assert merged == flat[i * b * world : (i + 1) * b * world]


def test_optimizer_state_round_trips_through_names():
    torch.manual_seed(0)
    models = build_models(ARGS)
    opt = build_optimizer(models.encoder, models.predictor, fused=False)
    x = torch.randn(2, 3, 16, 16)
    masks_enc = torch.tensor([[[0, 1, 2, 5], [3, 4, 6, 7]]])
    masks_pred = torch.tensor([[[8, 9], [10, 11]]])
    forward_loss(models, x, masks_enc, masks_pred).loss.backward()
    opt.step()
    names = optimizer_param_names(opt.param_groups, models.encoder, models.predictor)
    assert names[0].startswith("encoder.") and any(n.startswith("predictor.") for n in names)
    state = opt.state_dict()
    named = optimizer_state_to_names(state, names)
    assert set(named["state"]) <= set(names)
    back = optimizer_state_to_ids(named, names)
    assert back["param_groups"] == state["param_groups"]
    for i, st in state["state"].items():
        assert torch.equal(back["state"][i]["exp_avg"], st["exp_avg"])
    with pytest.raises(ValueError, match="covers"):
        optimizer_state_to_names(state, names[:-1])


def test_activation_checkpointing_keeps_names_and_gradients():
    def grads(checkpointing):
        torch.manual_seed(0)
        models = build_models(ARGS)
        if checkpointing:
            assert enable_activation_checkpointing(models.encoder) == 2
            assert enable_activation_checkpointing(models.predictor) == 1
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        masks_enc = torch.tensor([[[0, 1, 2, 5], [3, 4, 6, 7]]])
        masks_pred = torch.tensor([[[8, 9], [10, 11]]])
        forward_loss(models, x, masks_enc, masks_pred).loss.backward()
        return {n: p.grad for n, p in models.encoder.named_parameters() if p.grad is not None}

    plain, recomputed = grads(False), grads(True)
    assert plain.keys() == recomputed.keys()
    for name, g in plain.items():
        assert torch.allclose(recomputed[name], g, atol=1e-7), name


def test_wrap_models_single_process_and_bad_mode():
    models = build_models(ARGS)
    pm = wrap_models(models, mode="fsdp", world_size=1, rank=0, device=torch.device("cpu"))
    assert pm.mode == "single" and pm.step_models is models
    assert set(pm.model_state()) == {"encoder", "predictor", "target_encoder"}
    with pytest.raises(ValueError, match=r"meta\.parallel"):
        wrap_models(models, mode="zero3", world_size=2, rank=0, device=torch.device("cpu"))


def test_dist_info_from_env():
    assert dist_info_from_env({}) == DistInfo()
    assert dist_info_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == DistInfo(
        3, 8, 1
    )
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "16",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
    }
    assert dist_info_from_env(slurm) == DistInfo(5, 8, 1)  # the srun step's task count wins
    # torchrun's variables win over SLURM's (srun torchrun sets both)
    assert dist_info_from_env({**slurm, "RANK": "0", "WORLD_SIZE": "2"}).world_size == 2


def test_dist_context_single_process_and_bad_launches():
    ctx = DistContext.start(DistInfo(), torch.device("cpu"))
    assert not ctx.distributed and ctx.all_gather_object(7) == [7]
    assert ctx.broadcast_object("x") == "x"
    assert ctx.all_gather_tensor(torch.ones(3)).shape == (1, 3)
    with pytest.raises(DistributedError, match="MASTER_ADDR and MASTER_PORT not set"):
        DistContext.start(DistInfo(1, 2), torch.device("cpu"), env={})
    with pytest.raises(DistributedError, match="dist_timeout_s"):
        DistContext.start(DistInfo(), torch.device("cpu"), timeout_s=0)
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 0)) == "nccl"


def test_is_comm_error():
    assert is_comm_error(RuntimeError("[gloo/transport/tcp/pair.cc:545] Connection reset by peer"))
    assert is_comm_error(RuntimeError("Timed out waiting 8000ms for recv operation to complete"))
    assert not is_comm_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_comm_error(ValueError("gloo"))
    assert not is_comm_error(DistributedError("rank 0 of 2: timed out"))  # already ours


@pytest.fixture
def fake_group(monkeypatch):
    """A 2-rank context whose group calls are recorded instead of made (``calls``); a test
    sets ``barrier_error`` to make the barrier fail."""
    import ijepa.dist as dist_mod

    state = {"calls": [], "barrier_error": None}

    def barrier():
        state["calls"].append("barrier")
        if state["barrier_error"] is not None:
            raise state["barrier_error"]

    monkeypatch.setattr(dist_mod.tdist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist_mod.tdist, "barrier", barrier)
    monkeypatch.setattr(
        dist_mod.tdist, "destroy_process_group", lambda: state["calls"].append("destroy")
    )
    state["ctx"] = DistContext(DistInfo(0, 2), torch.device("cpu"), owns_group=True)
    return state


def test_a_finished_run_meets_its_peers_before_leaving_the_group(fake_group):
    with translated_errors(fake_group["ctx"]):
        pass
    assert fake_group["calls"] == ["barrier", "destroy"]
    assert not fake_group["ctx"].owns_group


def test_a_failed_rank_leaves_without_waiting_for_its_peers(fake_group):
    with pytest.raises(ValueError), translated_errors(fake_group["ctx"]):
        raise ValueError("bad data on this rank only")
    assert fake_group["calls"] == ["destroy"]  # a barrier could wait for a peer that went on


def test_a_lost_peer_drops_the_group_without_teardown(fake_group):
    with pytest.raises(DistributedError), translated_errors(fake_group["ctx"]):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:545] Connection reset by peer")
    assert fake_group["calls"] == []


def test_a_peer_gone_at_the_end_barrier_is_said_not_raised(fake_group, caplog):
    fake_group["barrier_error"] = RuntimeError("Connection closed by peer [127.0.0.1]:1234")
    with translated_errors(fake_group["ctx"]):
        pass
    assert fake_group["calls"] == ["barrier"]  # no teardown that could block on the dead peer
    assert "left before the end-of-run barrier" in caplog.text
    fake_group["calls"].clear()
    fake_group["barrier_error"] = TypeError("not a communication error")
    fake_group["ctx"].owns_group = True
    with pytest.raises(TypeError), translated_errors(fake_group["ctx"]):
        pass


def test_nan_skip_is_refused_with_several_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = apply_overrides(Config(), [f"logging.folder={tmp_path}", "optimization.nan_policy=skip"])
    with pytest.raises(ConfigError, match="nan_policy=skip is not supported"):
        train(cfg)
    with pytest.raises(ConfigError, match=r"meta\.parallel must be one of ddp, fsdp"):
        # refused by the override itself (a choice), before train() could see it
        apply_overrides(Config(), [f"logging.folder={tmp_path}", "meta.parallel=zero"])
    cfg = apply_overrides(Config(), [f"logging.folder={tmp_path}"])
    cfg.meta.parallel = "zero"  # set directly, past the override check: train() refuses it too
    with pytest.raises(ConfigError, match=r"meta\.parallel must be one of ddp, fsdp"):
        train(cfg)
