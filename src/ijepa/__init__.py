"""ijepa: I-JEPA pretraining, evaluation, inspection and interoperability on PyTorch.

``import ijepa`` is light: heavy pieces load on first use (``ijepa.load_encoder``).
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from ijepa.compat import load_encoder

        return load_encoder
    raise AttributeError(f"module 'ijepa' has no attribute {name!r}")
