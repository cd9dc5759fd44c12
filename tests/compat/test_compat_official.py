"""The official .pth.tar layout: released architectures, round trips, resumability, safety."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
from conftest import TINY_ARGS, backward, make_models
from torch import nn

from ijepa.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ijepa.compat import ConversionError, from_official, load_encoder, select_encoder, to_official
from ijepa.compat.arch import infer_model_args
from ijepa.models import get_2d_sincos_pos_embed
from ijepa.train.optim import build_optimizer, param_groups

# name: (embed dim, patch, image size, MLP width); all released models have 16 heads and a
# predictor of width 384. Depths are cut to 2 encoder blocks and 1 predictor block.
RELEASED = {
    "IN1K-vit.h.14-300e": (1280, 14, 224, 5120),
    "IN1K-vit.h.16-448px-300e": (1280, 16, 448, 5120),
    "IN22K-vit.h.14-900e": (1280, 14, 224, 5120),
    "IN22K-vit.g.16-600e": (1408, 16, 224, 6144),
}


def _const(value: float, *shape: int) -> torch.Tensor:
    """A full-size tensor backed by one float (stride 0), so files stay a few kilobytes."""
    return torch.tensor([value]).expand(*shape)


def _official_vit(dim: int, patch: int, grid: int, mlp: int, depth: int, base: float) -> dict:
    """An encoder state dict spelled out key by key as the official checkpoints name them."""
    sd = {
        "module.pos_embed": get_2d_sincos_pos_embed(dim, grid)[None],
        "module.patch_embed.proj.weight": _const(base, dim, 3, patch, patch),
        "module.patch_embed.proj.bias": _const(0.0, dim),
        "module.norm.weight": _const(1.0, dim),
        "module.norm.bias": _const(0.0, dim),
    }
    for i in range(depth):
        b = f"module.blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": _const(1.0, dim),
                b + "norm1.bias": _const(0.0, dim),
                b + "attn.qkv.weight": _const(base + i, 3 * dim, dim),
                b + "attn.qkv.bias": _const(0.0, 3 * dim),
                b + "attn.proj.weight": _const(base, dim, dim),
                b + "attn.proj.bias": _const(0.0, dim),
                b + "norm2.weight": _const(1.0, dim),
                b + "norm2.bias": _const(0.0, dim),
                b + "mlp.fc1.weight": _const(base, mlp, dim),
                b + "mlp.fc1.bias": _const(0.0, mlp),
                b + "mlp.fc2.weight": _const(base, dim, mlp),
                b + "mlp.fc2.bias": _const(0.0, dim),
            }
        )
    return sd


def _official_predictor(dim: int, grid: int, pdim: int, depth: int) -> dict:
    sd = {
        "module.mask_token": _const(0.0, 1, 1, pdim),
        "module.predictor_pos_embed": get_2d_sincos_pos_embed(pdim, grid)[None],
        "module.predictor_embed.weight": _const(0.01, pdim, dim),
        "module.predictor_embed.bias": _const(0.0, pdim),
        "module.predictor_norm.weight": _const(1.0, pdim),
        "module.predictor_norm.bias": _const(0.0, pdim),
        "module.predictor_proj.weight": _const(0.01, dim, pdim),
        "module.predictor_proj.bias": _const(0.0, dim),
    }
    for i in range(depth):
        b = f"module.predictor_blocks.{i}."
        for name, shape in (
            ("norm1", (pdim,)),
            ("attn.qkv", (3 * pdim, pdim)),
            ("attn.proj", (pdim, pdim)),
            ("norm2", (pdim,)),
            ("mlp.fc1", (4 * pdim, pdim)),
            ("mlp.fc2", (pdim, 4 * pdim)),
        ):
            sd[f"{b}{name}.weight"] = _const(1.0 if "norm" in name else 0.01, *shape)
            sd[f"{b}{name}.bias"] = _const(0.0, shape[0])
    return sd


def _official_opt(encoder: dict, predictor: dict) -> dict:
    """The official four AdamW groups (no moments yet), counted from the key names."""
    groups: list[list[str]] = [[], [], [], []]
    for offset, sd in ((0, encoder), (1, predictor)):
        for key, value in sd.items():
            groups[offset + 2 * ("bias" in key or value.ndim == 1)].append(key)
    index, param_groups = 0, []
    for g, names in enumerate(groups):
        group = {
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "weight_decay": 0.04,
            "amsgrad": False,
            "params": list(range(index, index + len(names))),
        }
        if g >= 2:
            group.update(WD_exclude=True, weight_decay=0)
        index += len(names)
        param_groups.append(group)
    return {"state": {}, "param_groups": param_groups}


def _official_file(path, dim, patch, img, mlp) -> None:
    grid = img // patch
    encoder = _official_vit(dim, patch, grid, mlp, depth=2, base=0.001)
    target = _official_vit(dim, patch, grid, mlp, depth=2, base=0.002)
    predictor = _official_predictor(dim, grid, 384, depth=1)
    state = {
        "encoder": encoder,
        "predictor": predictor,
        "target_encoder": target,
        "opt": _official_opt(encoder, predictor),
        "scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        },
        "epoch": 300,
        "loss": 0.1,
        "batch_size": 128,
        "world_size": 16,
        "lr": 1e-6,
    }
    torch.save(state, path)
    assert os.path.getsize(path) < 20e6  # the expanded tensors keep the file small


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_architectures_load_with_inferred_shapes(tmp_path, name):
    dim, patch, img, mlp = RELEASED[name]
    path = tmp_path / f"{name}.pth.tar"
    _official_file(path, dim, patch, img, mlp)

    state = load_checkpoint(path)
    args = infer_model_args(state, name)
    size = "vit_giant" if dim == 1408 else "vit_huge"
    assert args == {
        "model_name": size,
        "img_size": img,
        "patch_size": patch,
        "in_chans": 3,
        "pred_depth": 1,
        "pred_emb_dim": 384,
        "enc_depth": 2,
        "enc_emb_dim": None,  # the named size's width and heads: no override needed
        "enc_num_heads": None,
    }

    encoder, _ = load_encoder(path)  # the target encoder by default
    assert not encoder.training
    assert (encoder.embed_dim, encoder.depth, encoder.num_heads) == (dim, 2, 16)
    assert encoder.patch_size == patch and encoder.img_size == (img, img)
    assert encoder.blocks[0].mlp.fc1.out_features == mlp
    assert torch.all(encoder.blocks[1].attn.qkv.weight == 0.002 + 1)  # target, not context
    del encoder

    ours = from_official(state, name)
    assert ours["model_args"] == args and ours["epoch"] == 300
    assert all(not k.startswith("module.") for k in ours["encoder"])
    frozen = ("pos_embed", "predictor_pos_embed")
    counts = [0, 0]
    for net in ("encoder", "predictor"):
        for key, value in ours[net].items():
            if key not in frozen:
                counts[value.ndim == 1 or key.endswith(".bias")] += 1
    assert [len(g["params"]) for g in ours["opt"]["param_groups"]] == counts
    assert [g["apply_wd"] for g in ours["opt"]["param_groups"]] == [True, False]


def test_released_layout_runs_at_448(tmp_path):
    dim, patch, img, mlp = RELEASED["IN1K-vit.h.16-448px-300e"]
    path = tmp_path / "h16.pth.tar"
    _official_file(path, dim, patch, img, mlp)
    encoder, _ = load_encoder(path, img_size=224)
    with torch.no_grad():
        out = encoder(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 196, 1280)  # 14 x 14 patches after rebuilding the sin-cos table
    assert torch.isfinite(out).all()


def _assert_same_tree(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: {set(a) ^ set(b)}"
        for key in a:
            _assert_same_tree(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_ours_official_ours_round_trip_is_exact(tmp_path, tiny_state):
    official_path = tmp_path / "official.pth.tar"
    save_checkpoint(to_official(tiny_state), official_path)
    official = load_checkpoint(official_path)
    assert all(
        k.startswith("module.")
        for net in ("encoder", "predictor", "target_encoder")
        for k in official[net]
    )
    assert len(official["opt"]["param_groups"]) == 4 and "format_version" not in official
    back = from_official(official)
    for key in (
        "encoder",
        "predictor",
        "target_encoder",
        "opt",
        "model_args",
        "epoch",
        "step",
        "loss",
        "lr",
        "batch_size",
        "world_size",
        "config",
    ):
        _assert_same_tree(tiny_state[key], back[key], key)


def _official_groups(models) -> list[dict]:
    """The official code's four AdamW groups over ``named_parameters()`` (frozen ones too)."""
    enc, pred = models.encoder, models.predictor
    return [
        {"params": [p for n, p in enc.named_parameters() if "bias" not in n and p.ndim != 1]},
        {"params": [p for n, p in pred.named_parameters() if "bias" not in n and p.ndim != 1]},
        {
            "params": [p for n, p in enc.named_parameters() if "bias" in n or p.ndim == 1],
            "WD_exclude": True,
            "weight_decay": 0,
        },
        {
            "params": [p for n, p in pred.named_parameters() if "bias" in n or p.ndim == 1],
            "WD_exclude": True,
            "weight_decay": 0,
        },
    ]


def test_our_trainer_could_resume_from_official():
    models = make_models(seed=7)
    official_opt = torch.optim.AdamW(_official_groups(models), lr=1e-3, weight_decay=0.04)
    backward(models)
    official_opt.step()
    official = {
        **{
            net: {f"module.{k}": v for k, v in getattr(models, net).state_dict().items()}
            for net in ("encoder", "predictor", "target_encoder")
        },
        "opt": official_opt.state_dict(),
        "scaler": None,
        "epoch": 1,
        "loss": 0.5,
        "batch_size": 2,
        "world_size": 1,
        "lr": 1e-3,
    }
    # heads are not visible in shapes; a 64-wide model needs them recorded (real ones are 16)
    assert infer_model_args(official)["enc_num_heads"] == 1
    ours = from_official({**official, "model_args": TINY_ARGS})
    assert ours["model_args"] == TINY_ARGS
    opt = build_optimizer(models.encoder, models.predictor)
    opt.load_state_dict(ours["opt"])
    moved = 0
    for p in [*models.encoder.parameters(), *models.predictor.parameters()]:
        if p in official_opt.state:
            for moment in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(opt.state[p][moment], official_opt.state[p][moment])
            moved += 1
    assert moved == sum(len(g["params"]) for g in opt.param_groups)
    assert [g["apply_wd"] for g in opt.param_groups] == [True, False]


def test_official_code_could_resume(tiny_state, tiny_models):
    """Rebuild the official setup (DDP-wrapped nets, the four AdamW groups, a GradScaler)."""
    official = to_official(tiny_state)
    fresh = make_models(seed=5)
    for net in ("encoder", "predictor", "target_encoder"):
        holder = nn.Module()
        holder.module = getattr(fresh, net)  # what DistributedDataParallel's state_dict looks like
        holder.load_state_dict(official[net])  # strict
    enc = fresh.encoder
    opt = torch.optim.AdamW(_official_groups(fresh))
    opt.load_state_dict(official["opt"])
    # every moment landed on the parameter of the same name
    ours = tiny_state["opt"]
    names = {
        id(p): f"{net}.{n}"
        for net in ("encoder", "predictor")
        for n, p in getattr(tiny_models, net).named_parameters()
    }
    ordered = [
        names[id(p)]
        for g in param_groups(tiny_models.encoder, tiny_models.predictor)
        for p in g["params"]
    ]
    fresh_params = {
        f"{net}.{n}": p
        for net in ("encoder", "predictor")
        for n, p in getattr(fresh, net).named_parameters()
    }
    assert len(ours["state"]) == len(ordered)
    for index, name in enumerate(ordered):
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[fresh_params[name]][moment], ours["state"][index][moment])
    assert enc.pos_embed not in opt.state  # frozen tables carry no moments
    assert opt.param_groups[2]["WD_exclude"] and opt.param_groups[0]["weight_decay"] == 0.04
    scaler = torch.amp.GradScaler("cpu")
    scaler.load_state_dict(official["scaler"])
    assert official["epoch"] == 3 and official["model_args"] == TINY_ARGS


def test_select_encoder_and_missing_encoder(tiny_state):
    state = tiny_state
    target = select_encoder(
        {"target_encoder": {f"module.{k}": v for k, v in state["target_encoder"].items()}}
    )
    assert set(target) == set(state["target_encoder"])
    with pytest.raises(ConversionError, match="which='context'"):
        select_encoder({"encoder": state["encoder"]}, "target")
    with pytest.raises(ConversionError, match="'target' or 'context'"):
        select_encoder(state, "ema")


def test_mismatched_checkpoint_reports_keys(tmp_path, tiny_state):
    state = {**tiny_state, "model_args": {**TINY_ARGS, "enc_depth": 3}}
    with pytest.raises(CheckpointError, match=r"missing keys .*blocks\.2\."):
        to_official(state)
    bad = tmp_path / "bad.pth.tar"
    encoder = dict(tiny_state["encoder"])
    del encoder["norm.bias"]
    save_checkpoint({**tiny_state, "encoder": encoder}, bad)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): norm\.bias"):
        load_encoder(bad, which="context")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_callable_is_refused(tmp_path, tiny_state):
    path = tmp_path / "evil.pth.tar"
    torch.save({**tiny_state, "opt": _Evil()}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        load_encoder(path)
    raw = tmp_path / "raw.pth.tar"
    raw.write_bytes(pickle.dumps({"encoder": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError):
        load_encoder(raw)
