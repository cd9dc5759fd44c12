"""Read back what the trackers wrote: TensorBoard event files and W&B offline run files."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

#: The W&B transaction log is a LevelDB-style log: 32 KiB blocks of chunks with a 7-byte header
#: (crc32, length, type), after a 7-byte file header starting with ":W&B".
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in the event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_texts(folder: Path) -> list[tuple[int, str]]:
    """``[(step, text)]`` of the ``alarms`` text summaries under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    out = []
    for tag in acc.Tags()["tensors"]:
        if tag.startswith("alarms"):
            for e in acc.Tensors(tag):
                out.append((e.step, e.tensor_proto.string_val[0].decode()))
    return out


def _chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", f"not a W&B run file (header {data[:7]!r})"
    pos, pending, out = 7, b"", []
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            out.append(pending + chunk)
    return out


def _records(path: Path, wait_s: float) -> list[Any]:
    """The records of one run file, once it holds the run's ``exit`` record.

    ``run.finish()`` can return before W&B's service process has written the file's end.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + wait_s
    while True:
        records = []
        for raw in _chunks(path.read_bytes()):
            record = pb.Record()
            record.ParseFromString(raw)
            records.append(record)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {wait_s} s"
        time.sleep(0.2)


def wandb_history(
    run_dir: Path, wait_s: float = 60.0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The history rows and the config of the W&B offline runs under ``run_dir/wandb``."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files, f"no W&B offline run under {run_dir / 'wandb'}"
    rows: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    for path in files:
        for record in _records(path, wait_s):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append(
                    {
                        (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                        for i in record.history.item
                    }
                )
            elif kind == "run":
                for item in record.run.config.update:
                    config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return rows, config
