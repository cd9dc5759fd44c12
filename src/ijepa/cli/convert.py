"""``ijepa convert``: move weights between our, the official, transformers and timm formats."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# the same as ijepa.compat.FORMATS, spelled out so that building the parser imports no torch
FORMATS = ("ours", "official", "hf", "timm")

_DESCRIPTION = """\
Convert I-JEPA weights. Formats:
  ours      our training checkpoint (.pth.tar), or our encoder file (OUT ending in .safetensors)
  official  the official .pth.tar layout (module.-prefixed encoder/predictor/target_encoder, opt,
            epoch, ...): the official code can resume from it
  hf        a transformers IJepaModel folder (config.json + model.safetensors)
  timm      a timm *_gap ViT: a .safetensors file, or a folder for timm's 'local-dir:'
  dcp       (input only) a sharded checkpoint folder of a meta.parallel=fsdp run
            (RUN/jepa-latest.dcp or RUN/jepa-stepNNNNNNNN.dcp), written with torch's
            distributed checkpoint by every rank: --to ours gives the single-file checkpoint

Training checkpoints (ours, official) convert into each other with every network and the
optimizer state. Every other conversion moves one encoder: --encoder picks the target (EMA)
encoder, which the paper evaluates (default), or the context encoder, which is what the
transformers and timm conversions of the released models hold.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert`` subcommand."""
    p = sub.add_parser(
        "convert",
        help="convert weights between ours, official, transformers (hf) and timm formats",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from",
        dest="src",
        default="auto",
        choices=("auto", *FORMATS, "dcp"),
        help="input format (default: detect it)",
    )
    p.add_argument("--to", dest="dst", required=True, choices=FORMATS, help="output format")
    p.add_argument(
        "--encoder",
        default="target",
        choices=("target", "context"),
        help="which encoder of a training checkpoint to export (default: target)",
    )
    p.add_argument("input", metavar="IN", help="input file or folder")
    p.add_argument("output", metavar="OUT", help="output file or folder")
    p.set_defaults(func=run_convert)


def _is_training_file(path: Path, fmt: str) -> bool:
    return path.is_file() and path.suffix != ".safetensors" and fmt in ("ours", "official")


def run_convert(args: argparse.Namespace) -> int:
    """Handler of ``ijepa convert``."""
    from ijepa.checkpoint import load_checkpoint, save_checkpoint
    from ijepa.compat import (
        ConversionError,
        detect_format,
        from_official,
        read_encoder,
        save_encoder,
        save_hf,
        save_timm,
        to_official,
    )
    from ijepa.sharded_checkpoint import is_sharded

    src_path, out = Path(args.input), Path(args.output)
    if args.src == "dcp" or (args.src == "auto" and is_sharded(src_path)):
        return _convert_sharded(args, src_path, out)
    detected = detect_format(src_path)
    src = detected if args.src == "auto" else args.src
    training = _is_training_file(src_path, detected)
    wants_checkpoint = args.dst == "official" or (
        args.dst == "ours" and out.suffix != ".safetensors"
    )
    if wants_checkpoint:
        if args.dst == "official" and out.suffix == ".safetensors":
            raise ConversionError("the official layout is a .pth.tar file, not .safetensors")
        if not training:
            raise ConversionError(
                f"{src_path} holds a single encoder, but --to {args.dst} writes a training "
                "checkpoint (encoder, predictor, target_encoder)"
                + ("; name OUT *.safetensors for an encoder file" if args.dst == "ours" else "")
            )
        if src != detected:
            raise ConversionError(f"{src_path} looks like the {detected!r} format, not {src!r}")
        state = load_checkpoint(src_path)
        ours = from_official(state, str(src_path)) if detected == "official" else state
        result = to_official(ours, str(src_path)) if args.dst == "official" else ours
        save_checkpoint(result, out)
        print(f"wrote {out} ({args.dst} training checkpoint)")
        return 0
    encoder, meta = read_encoder(src_path, which=args.encoder, fmt=src)
    if args.dst == "ours":
        save_encoder(encoder, out, meta)
    elif args.dst == "hf":
        save_hf(encoder, out, meta)
    else:
        save_timm(encoder, out, meta)
    which = f"{meta.which} encoder" if meta.which else "encoder"
    print(f"wrote {out} ({args.dst}, {which})")
    return 0


def _convert_sharded(args: argparse.Namespace, src_path: Path, out: Path) -> int:
    """``--from dcp``: a sharded checkpoint folder to any output format."""
    import tempfile

    from ijepa.checkpoint import save_checkpoint
    from ijepa.compat import ConversionError, to_official
    from ijepa.train.sharded import sharded_to_state

    state = sharded_to_state(src_path)
    if args.dst == "official" or (args.dst == "ours" and out.suffix != ".safetensors"):
        if args.dst == "official" and out.suffix == ".safetensors":
            raise ConversionError("the official layout is a .pth.tar file, not .safetensors")
        result = to_official(state, str(src_path)) if args.dst == "official" else state
        save_checkpoint(result, out)
        print(f"wrote {out} ({args.dst} training checkpoint, step {state.get('step')})")
        return 0
    # one encoder: go through the single-file checkpoint, which every encoder writer reads
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole.pth.tar"
        save_checkpoint(state, whole)
        return run_convert(argparse.Namespace(**{**vars(args), "input": str(whole), "src": "ours"}))
