"""The CUDA path: training (fp32 and bf16), checkpoints that move between CUDA and CPU, CPU/CUDA
agreement of the encoder and predictor, attention kernels and feature extraction.

These need a CUDA device and are skipped without one (CI has none). Run them on a GPU machine with
``pytest -m gpu tests/gpu``.
"""

import json
from pathlib import Path

import pytest
import torch

from ijepa import checkpoint as ckpt
from ijepa.config import Config, apply_overrides
from ijepa.eval import extract_features
from ijepa.models.attention import Attention
from ijepa.models.predictor import VisionTransformerPredictor
from ijepa.models.vit import vit_encoder
from ijepa.recipes import TINY_OVERRIDES
from ijepa.train.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = [*TINY_OVERRIDES, "data.batch_size=8", "optimization.epochs=2", "optimization.warmup=1"]


@pytest.fixture(autouse=True)
def _no_tf32():
    """Plain fp32 matrix products, so CPU/CUDA comparisons test our code and not TF32 rounding."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _cfg(folder: Path, *extra: str) -> Config:
    return apply_overrides(
        Config(), [*TINY, f"logging.folder={folder}", "logging.log_every=1", *extra]
    )


def _records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("bf16", [False, True])
def test_train_on_cuda_learns_and_checkpoints(tmp_path, bf16):
    res = train(
        _cfg(tmp_path / "run", "meta.device=cuda", f"meta.use_bfloat16={str(bf16).lower()}")
    )
    assert res.step == 16
    assert next(res.models.encoder.parameters()).device.type == "cuda"
    recs = _records(tmp_path / "run")
    losses = [r["loss"] for r in recs]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    state = ckpt.load_checkpoint(ckpt.latest_path(tmp_path / "run"))
    # checkpoints hold CPU tensors whatever the training device, so they load anywhere
    for key in ("encoder", "predictor", "target_encoder"):
        assert all(v.device.type == "cpu" for v in state[key].values()), key


def test_cuda_checkpoint_resumes_on_cpu_and_cuda(tmp_path):
    """A run stopped on CUDA resumes on CPU (and a CPU run resumes on CUDA) at the right step."""
    train(_cfg(tmp_path / "a", "meta.device=cuda", "optimization.max_steps=6"))
    res = train(_cfg(tmp_path / "a", "meta.device=cpu", "optimization.max_steps=10"))
    assert res.step == 10
    assert [r["step"] for r in _records(tmp_path / "a")] == list(range(1, 11))
    res = train(_cfg(tmp_path / "a", "meta.device=cuda"))
    assert res.step == 16
    assert next(res.models.target_encoder.parameters()).device.type == "cuda"


def test_cuda_training_tracks_cpu_training(tmp_path):
    """The same deterministic run on CPU and on CUDA (fp32): the same losses to float rounding."""
    train(
        _cfg(
            tmp_path / "cpu",
            "meta.device=cpu",
            "meta.deterministic=true",
            "optimization.max_steps=6",
        )
    )
    train(
        _cfg(
            tmp_path / "gpu",
            "meta.device=cuda",
            "meta.deterministic=true",
            "optimization.max_steps=6",
        )
    )
    cpu = torch.tensor([r["loss"] for r in _records(tmp_path / "cpu")])
    gpu = torch.tensor([r["loss"] for r in _records(tmp_path / "gpu")])
    assert cpu.shape == gpu.shape == (6,)
    assert torch.allclose(cpu, gpu, rtol=1e-3, atol=1e-5), (cpu, gpu)


def test_encoder_and_predictor_agree_between_cpu_and_cuda():
    torch.manual_seed(0)
    enc = vit_encoder("vit_tiny", img_size=32, patch_size=4, depth=2, in_chans=3).eval()
    pred = VisionTransformerPredictor(
        grid_size=8, embed_dim=192, predictor_embed_dim=96, depth=2, num_heads=3
    ).eval()
    x = torch.randn(4, 3, 32, 32)
    ctx = torch.stack([torch.randperm(64)[:40] for _ in range(4)])
    tgt = torch.stack([torch.randperm(64)[:12] for _ in range(4)])
    with torch.no_grad():
        ref_z = enc(x, [ctx])
        ref_p = pred(ref_z, [ctx], [tgt])
        enc_c, pred_c = enc.cuda(), pred.cuda()
        z = enc_c(x.cuda(), [ctx.cuda()])
        p = pred_c(z, [ctx.cuda()], [tgt.cuda()])
    assert z.shape == ref_z.shape and p.shape == ref_p.shape
    assert torch.allclose(z.cpu(), ref_z, atol=1e-4, rtol=1e-4)
    assert torch.allclose(p.cpu(), ref_p, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_and_plain_attention_agree_on_cuda(dtype):
    torch.manual_seed(0)
    sdpa = Attention(96, num_heads=3, attn_impl="sdpa").cuda()
    plain = Attention(96, num_heads=3, attn_impl="plain").cuda()
    plain.load_state_dict(sdpa.state_dict())
    x = torch.randn(8, 50, 96, device="cuda", requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        a, b = sdpa(x), plain(y)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)
    a.float().sum().backward()
    b.float().sum().backward()
    assert x.grad is not None and y.grad is not None
    assert torch.allclose(x.grad, y.grad, atol=tol * 10, rtol=tol * 10)


def test_feature_extraction_on_cuda_matches_cpu():
    torch.manual_seed(0)
    enc = vit_encoder("vit_tiny", img_size=32, patch_size=4, depth=2, in_chans=3).eval()
    batches = [(torch.randn(16, 3, 32, 32), torch.arange(16)) for _ in range(3)]
    cpu = extract_features(enc, batches, poolings=("avg",), device="cpu", progress=False)
    gpu = extract_features(enc, batches, poolings=("avg",), device="cuda", progress=False)
    assert cpu["avg"].shape == gpu["avg"].shape == (48, 192)
    assert gpu["avg"].device.type == "cpu"
    assert torch.allclose(cpu["avg"], gpu["avg"], atol=1e-4, rtol=1e-4)
    assert torch.equal(cpu["labels"], gpu["labels"])
