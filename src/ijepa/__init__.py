"""ijepa: I-JEPA pretraining, evaluation, inspection and interoperability on PyTorch."""

__version__ = "0.1.0"

__all__ = ["__version__"]
