"""The exceptions metarag raises. Each carries the message and, where one is involved, the
path (an index directory or a document) it concerns."""

from __future__ import annotations

import errno
from typing import Optional


class MetaragError(Exception):
    """A metarag operation failed: ``message`` says why, ``path`` names the file or index
    directory involved (``None`` when there is none)."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class IndexNotFoundError(MetaragError, FileNotFoundError):
    """``Index.open`` was given a directory that holds no metarag index (also a
    ``FileNotFoundError``, whose ``filename`` is the directory)."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message, path)
        self.errno = errno.ENOENT
        self.strerror = message
        self.filename = path

    def __str__(self) -> str:
        return self.message


class SettingsError(MetaragError, ValueError):
    """An argument or pipeline setting is invalid (also a ``ValueError``)."""


class ModelUnavailableError(MetaragError):
    """A model could not be loaded: run ``python3 onnx/setup.py`` (or ``metarag setup``) to
    fetch and convert them, or pass ``models=`` pointing at a models directory."""
