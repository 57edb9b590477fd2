"""Type stubs of the extension module (crates/python/src/lib.rs). Use it through ``metarag``."""

from os import PathLike
from pathlib import Path
from typing import Optional, Union

_Path = Union[str, PathLike[str]]

__version__: str

class Chunk:
    """One chunk: its byte span in the document's UTF-8 text, the text, its sentences' scores."""

    doc: str
    index: int
    start: int
    end: int
    text: str
    scores: list[float]

class Hit:
    """One search result."""

    score: float
    bm25_rank: Optional[int]
    dense_rank: Optional[int]
    id: int
    doc: str
    path: str
    kind: str
    chunk: int
    start: int
    end: int
    text: str

class Citation:
    """A chunk an answer cites: its number in the prompt, ``path#chunk`` id, file and span."""

    number: int
    id: str
    path: Optional[str]
    start: Optional[int]
    end: Optional[int]

class Answer:
    """An answer, its aggregated confidence in [0, 1] and its citations."""

    question: str
    text: str
    confidence: float
    grounded: bool
    citations: list[Citation]
    retrieved: list[str]
    json: str

class IngestReport:
    """What an ingest did; ``failed`` lists (path, error) of the files that failed."""

    files: int
    ingested: int
    unchanged: int
    failed: list[tuple[str, str]]
    pruned: int
    chunks: int
    recovered: int
    skipped_binary: int
    seconds: float
    json: str

def chunk(
    text: Optional[str] = None,
    path: Optional[_Path] = None,
    pipeline_json: Optional[str] = None,
    pipeline_file: Optional[_Path] = None,
    threads: Optional[int] = None,
    models: Optional[_Path] = None,
) -> list[Chunk]: ...

class Index:
    @staticmethod
    def open(dir: _Path, *, threads: Optional[int] = None, models: Optional[_Path] = None) -> Index: ...
    @staticmethod
    def create(
        dir: _Path,
        *,
        pipeline_json: Optional[str] = None,
        pipeline_file: Optional[_Path] = None,
        threads: Optional[int] = None,
        models: Optional[_Path] = None,
    ) -> Index: ...
    @property
    def dir(self) -> Path: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def documents(self) -> int: ...
    @property
    def chunks(self) -> int: ...
    def ingest(
        self, paths: list[_Path], *, progress: bool = False, prune: bool = False, file_timeout: int = 60
    ) -> IngestReport: ...
    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: str = "hybrid",
        path_prefix: Optional[str] = None,
        kinds: Optional[list[str]] = None,
        candidates: int = 20,
    ) -> list[Hit]: ...
    def ask(
        self,
        question: str,
        *,
        samples: int = 8,
        k: int = 2,
        aggregate: str = "rpc",
        extractive: bool = True,
        seed: int = 0,
    ) -> Answer: ...
    def chunk(self, text: str) -> list[Chunk]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Index: ...
    def __exit__(self, *exc: object) -> bool: ...
