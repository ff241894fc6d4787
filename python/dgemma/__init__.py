"""dgemma: fast local inference for Google's DiffusionGemma."""

from .errors import (ConversionError, DgemmaError, FileIOError, FormatError, InternalError, InvalidArgumentError,
                     ModelError, OutOfMemoryError, OutOfRangeError, TemplateLimitError, TokenizerError,
                     UnsupportedError)
from .tokenizer import StreamDecoder, Tokenizer

# The native library loads on first use of the model API, so that the tokenizer and the converter
# work without it.
_LAZY = {"Model", "Session", "demo_model_path", "ModelConfig", "LayerConfig", "SamplerDefaults"}
_LAZY_DEVICES = {"cuda_devices", "CudaDevice"}


def __getattr__(name):
    if name in _LAZY:
        from . import model

        return getattr(model, name)
    if name in _LAZY_DEVICES:
        from . import devices

        return getattr(devices, name)
    raise AttributeError(f"module 'dgemma' has no attribute {name!r}")


__version__ = "0.1.0"


def demo_model_path() -> str:
    """The small DiffusionGemma that ships with the package (trained here on synthetic tasks;
    see train/README.md): what `dgemma generate` runs when no model is given."""
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "demo.gguf")
    if not os.path.exists(path):
        raise FileIOError(f"the bundled demo model is missing ({path}); reinstall dgemma or pass a model")
    return path

__all__ = [
    "Model", "Session", "demo_model_path", "cuda_devices", "CudaDevice", "ModelConfig", "LayerConfig", "SamplerDefaults", "Tokenizer", "StreamDecoder",
    "DgemmaError", "InvalidArgumentError", "FileIOError", "FormatError", "UnsupportedError", "ModelError",
    "OutOfRangeError", "OutOfMemoryError", "InternalError", "TokenizerError", "TemplateLimitError", "ConversionError",
]
