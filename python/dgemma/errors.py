"""Typed exceptions mirroring the C API's dgemma_status codes."""


class DgemmaError(Exception):
    """Base class of every error dgemma raises."""

    status = None


class InvalidArgumentError(DgemmaError, ValueError):
    status = 1


class FileIOError(DgemmaError, OSError):
    status = 2


class FormatError(DgemmaError):
    """The file is not well-formed GGUF (truncated, bad magic, lengths or offsets outside the file)."""

    status = 3


class UnsupportedError(DgemmaError):
    """Well-formed, but an architecture or tensor type this build cannot run."""

    status = 4


class ModelError(DgemmaError):
    """A tensor or hyperparameter is missing or inconsistent with the others."""

    status = 5


class OutOfRangeError(DgemmaError, IndexError):
    """A token id, the context length or the canvas length was exceeded."""

    status = 6


class OutOfMemoryError(DgemmaError, MemoryError):
    status = 7


class InternalError(DgemmaError):
    status = 8


class TokenizerError(DgemmaError):
    """Tokenizer metadata is missing or malformed, or a chat template cannot be rendered."""


class TemplateLimitError(TokenizerError):
    """A chat template ran too long or built too much text while rendering (it is untrusted code)."""


class ConversionError(DgemmaError):
    """A Hugging Face checkpoint cannot be converted."""


_BY_STATUS = {cls.status: cls for cls in (
    InvalidArgumentError, FileIOError, FormatError, UnsupportedError, ModelError,
    OutOfRangeError, OutOfMemoryError, InternalError)}


def error_for_status(status: int, message: str) -> DgemmaError:
    return _BY_STATUS.get(status, DgemmaError)(message or f"dgemma error {status}")
