"""The HTML of ``ijepa report``: escaping, inlined images, the attention explorer's data and code.

Safety rules of the page:

* every string that comes from data (file names, labels, config values, JSON results) goes
  through :func:`esc` (``html.escape``) before it reaches the HTML;
* JSON embedded in a ``<script>`` element goes through :func:`script_json`, which escapes ``<``,
  ``>``, ``&`` and the JavaScript line separators, so no data can close the element;
* a Content-Security-Policy allows only the page's own inline script (by its SHA-256 hash),
  inline styles and ``data:`` images: the page loads nothing from outside, and an injected script
  would not run even if escaping failed somewhere.

The explorer's JavaScript only ever writes data through ``textContent`` and canvas drawing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "EXPLORER_JS",
    "esc",
    "explorer_payload",
    "page",
    "png_data_uri",
    "script_json",
]


def esc(value: Any) -> str:
    """HTML-escape ``str(value)`` (quotes included)."""
    return html.escape(str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _rgb_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a float ``(H, W, 3)`` image in ``[0, 1]``."""
    from PIL import Image

    arr = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def explorer_payload(
    display: np.ndarray,
    maps: torch.Tensor,
    labels: Sequence[str],
    patch_size: int,
    layer_names: Sequence[str],
) -> dict[str, Any]:
    """The attention explorer's data.

    Each attention row (one query patch, one layer, one head) is divided by its maximum and
    stored as uint8, base64-encoded in ``(layer, head, query, key)`` order.

    Args:
        display: ``(B, H, W, 3)`` float images in ``[0, 1]``.
        maps: ``(B, L, heads, N, N)`` attention probabilities.
        labels: one caption per image.
        patch_size: patch side in pixels.
        layer_names: one name per layer.

    Returns:
        A JSON-ready dict.
    """
    b, n_layers, n_heads, n, n2 = maps.shape
    h, w = display.shape[1:3]
    grid = (h // patch_size, w // patch_size)
    if n != n2 or n != grid[0] * grid[1] or display.shape[0] != b or len(labels) != b:
        raise ValueError(
            f"explorer_payload: maps {tuple(maps.shape)}, images {display.shape}, "
            f"{len(labels)} labels and patch {patch_size} do not agree"
        )
    if len(layer_names) != n_layers:
        raise ValueError(f"{len(layer_names)} layer names for {n_layers} layers")
    scaled = maps.float() / maps.float().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    quant = (scaled * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    images = [
        {
            "label": str(labels[i]),
            "png": png_data_uri(_rgb_png(display[i])),
            "attn": base64.b64encode(quant[i].tobytes()).decode("ascii"),
        }
        for i in range(b)
    ]
    return {
        "grid": list(grid),
        "layers": [str(name) for name in layer_names],
        "heads": n_heads,
        "images": images,
    }


EXPLORER_JS = r"""
(function () {
  "use strict";
  var holder = document.getElementById("attn-data");
  var root = document.getElementById("explorer");
  if (!holder || !root) { return; }
  var data = JSON.parse(holder.textContent);
  var rows = data.grid[0], cols = data.grid[1], n = rows * cols;
  var heads = data.heads, SIDE = 224;
  var layerSel = document.getElementById("layer-select");
  var headSel = document.getElementById("head-select");
  data.layers.forEach(function (name, i) {
    var o = document.createElement("option");
    o.value = String(i); o.textContent = name; layerSel.appendChild(o);
  });
  layerSel.value = String(data.layers.length - 1);
  var mean = document.createElement("option");
  mean.value = "mean"; mean.textContent = "mean of heads"; headSel.appendChild(mean);
  for (var hh = 0; hh < heads; hh++) {
    var o = document.createElement("option");
    o.value = String(hh); o.textContent = "head " + hh; headSel.appendChild(o);
  }
  function decode(b64) {
    var s = atob(b64), a = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { a[i] = s.charCodeAt(i); }
    return a;
  }
  function heat(v) {  // v in [0, 1] -> dark purple, red, yellow
    var r = Math.min(255, Math.round(510 * v));
    var g = Math.max(0, Math.round(255 * (2 * v - 1)));
    var b = Math.round(110 * (1 - v));
    return "rgba(" + r + "," + g + "," + b + ",0.75)";
  }
  var items = data.images.map(function (entry, idx) {
    var box = document.createElement("div");
    box.className = "explorer-item";
    var pic = document.createElement("canvas");
    var map = document.createElement("canvas");
    pic.width = pic.height = map.width = map.height = SIDE;
    pic.className = "explorer-image"; map.className = "explorer-map";
    pic.title = map.title = "click a patch";
    var cap = document.createElement("div");
    cap.className = "caption"; cap.textContent = entry.label;
    var pair = document.createElement("div");
    pair.className = "pair"; pair.appendChild(pic); pair.appendChild(map);
    box.appendChild(pair); box.appendChild(cap); root.appendChild(box);
    var item = {box: box, pic: pic, map: map, attn: decode(entry.attn), img: new Image(),
                query: Math.floor(rows / 2) * cols + Math.floor(cols / 2), ready: false};
    item.img.onload = function () { item.ready = true; draw(item); };
    item.img.src = entry.png;
    function pick(ev) {
      var rect = ev.target.getBoundingClientRect();
      var c = Math.floor((ev.clientX - rect.left) / rect.width * cols);
      var r = Math.floor((ev.clientY - rect.top) / rect.height * rows);
      item.query = Math.max(0, Math.min(rows - 1, r)) * cols + Math.max(0, Math.min(cols - 1, c));
      draw(item);
    }
    pic.addEventListener("click", pick);
    map.addEventListener("click", pick);
    box.setAttribute("data-index", String(idx));
    return item;
  });
  function row(item, layer, head) {
    var out = new Float32Array(n), off;
    var hs = head === "mean" ? Array.from({length: heads}, function (_, k) { return k; })
                             : [parseInt(head, 10)];
    hs.forEach(function (h) {
      off = ((layer * heads + h) * n + item.query) * n;
      for (var k = 0; k < n; k++) { out[k] += item.attn[off + k] / 255 / hs.length; }
    });
    var mn = Infinity, mx = -Infinity;  // stretch min..max to 0..1 for contrast
    for (var k = 0; k < n; k++) { mn = Math.min(mn, out[k]); mx = Math.max(mx, out[k]); }
    for (var j = 0; j < n; j++) { out[j] = mx > mn ? (out[j] - mn) / (mx - mn) : 0; }
    return out;
  }
  function draw(item) {
    var layer = parseInt(layerSel.value, 10), head = headSel.value;
    item.box.setAttribute("data-patch", String(item.query));
    item.box.setAttribute("data-layer", String(layer));
    item.box.setAttribute("data-head", head);
    if (!item.ready) { return; }
    var cw = SIDE / cols, ch = SIDE / rows;
    var p = item.pic.getContext("2d"), m = item.map.getContext("2d");
    p.imageSmoothingEnabled = false; m.imageSmoothingEnabled = false;
    p.drawImage(item.img, 0, 0, SIDE, SIDE);
    var qr = Math.floor(item.query / cols), qc = item.query % cols;
    p.strokeStyle = "#00e5ff"; p.lineWidth = 3;
    p.strokeRect(qc * cw + 1.5, qr * ch + 1.5, cw - 3, ch - 3);
    m.globalAlpha = 1; m.drawImage(item.img, 0, 0, SIDE, SIDE);
    m.fillStyle = "rgba(0,0,0,0.55)"; m.fillRect(0, 0, SIDE, SIDE);
    var values = row(item, layer, head);
    for (var k = 0; k < n; k++) {
      m.fillStyle = heat(values[k]);
      m.fillRect((k % cols) * cw, Math.floor(k / cols) * ch, cw, ch);
    }
    m.strokeStyle = "#00e5ff"; m.lineWidth = 2;
    m.strokeRect(qc * cw + 1, qr * ch + 1, cw - 2, ch - 2);
  }
  function redraw() { items.forEach(draw); }
  layerSel.addEventListener("change", redraw);
  headSel.addEventListener("change", redraw);
  redraw();
})();
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em;
       color: #222; background: #fafafa; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-top: .6em; }
img.figure { max-width: 100%; border: 1px solid #ddd; background: white; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: left; }
pre { background: #f0f0f0; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { color: #666; font-style: italic; }
.alarm { color: #b00020; font-weight: bold; } .ok { color: #1b7a1b; }
#explorer { display: flex; flex-wrap: wrap; gap: 1.2em; }
.explorer-item .pair { display: flex; gap: 4px; }
.explorer-item canvas { cursor: crosshair; border: 1px solid #bbb; image-rendering: pixelated; }
.caption { font-size: .85em; color: #444; margin-top: .2em; }
.controls { margin: .5em 0 1em; } .controls label { margin-right: 1em; }
"""


def page(title: str, body: str, *, explorer_data: dict[str, Any] | None) -> str:
    """A complete HTML document.

    Args:
        title: page title (escaped here).
        body: the body HTML, already escaped where it holds data.
        explorer_data: :func:`explorer_payload` output, or None for no explorer script.
    """
    script = ""
    script_src = "'none'"
    if explorer_data is not None:
        digest = base64.b64encode(hashlib.sha256(EXPLORER_JS.encode()).digest()).decode()
        script_src = f"'sha256-{digest}'"
        script = (
            f'<script type="application/json" id="attn-data">{script_json(explorer_data)}</script>\n'
            f"<script>{EXPLORER_JS}</script>\n"
        )
    csp = (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_src}; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}\n{script}</body>\n</html>\n"
    )
