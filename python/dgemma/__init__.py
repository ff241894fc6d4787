"""dgemma: fast local inference for Google's DiffusionGemma."""

from .errors import (ConversionError, DgemmaError, FileIOError, FormatError, InternalError, InvalidArgumentError,
                     ModelError, OutOfMemoryError, OutOfRangeError, TokenizerError, UnsupportedError)
from .tokenizer import StreamDecoder, Tokenizer

# The native library loads on first use of the model API, so that the tokenizer and the converter
# work without it.
_LAZY = {"Model", "Session", "ModelConfig", "LayerConfig", "SamplerDefaults"}


def __getattr__(name):
    if name in _LAZY:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'dgemma' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Model", "Session", "ModelConfig", "LayerConfig", "SamplerDefaults", "Tokenizer", "StreamDecoder",
    "DgemmaError", "InvalidArgumentError", "FileIOError", "FormatError", "UnsupportedError", "ModelError",
    "OutOfRangeError", "OutOfMemoryError", "InternalError", "TokenizerError", "ConversionError",
]
