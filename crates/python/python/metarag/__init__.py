"""metarag: perplexity-driven meta-chunking, hybrid retrieval and answers with citations.

Example::

    import metarag
    index = metarag.Index.create("idx")                     # an empty index (default pipeline)
    index.ingest(["examples/corpus"], progress=True)        # PDF, HTML, Markdown, text
    hits = index.search("who is Ishmael", k=3)              # hybrid: BM25 + dense, fused
    answer = index.ask("What does the narrator ask to be called?")
    print(answer.text, answer.confidence, [c.id for c in answer.citations])

Models are read from ``$METARAG_MODELS`` or the ``models/`` directory of the checkout the
package was built from (``python3 onnx/setup.py`` fills it); every call takes ``models=`` to
use another. Model and index work runs with the GIL released, so threads can search at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from . import _native
from ._errors import IndexNotFoundError, MetaragError, ModelUnavailableError, SettingsError
from ._native import Answer, Chunk, Citation, Hit, IngestReport

__version__: str = _native.__version__

__all__ = [
    "Answer",
    "Chunk",
    "Citation",
    "Hit",
    "Index",
    "IndexNotFoundError",
    "IngestReport",
    "MetaragError",
    "ModelUnavailableError",
    "SettingsError",
    "chunk",
]

PathLike = Union[str, "os.PathLike[str]"]
Pipeline = Union[PathLike, Mapping[str, Any], None]


def _pipeline_args(pipeline: Pipeline) -> dict:
    """A pipeline as the native layer takes it: a TOML file, or a mapping shaped like one."""
    if pipeline is None:
        return {}
    if isinstance(pipeline, Mapping):
        return {"pipeline_json": json.dumps(pipeline)}
    return {"pipeline_file": os.fspath(pipeline)}


def _looks_like_a_file(source: str) -> bool:
    return len(source) < 4096 and "\n" not in source and os.path.isfile(source)


def chunk(
    source: Union[str, "os.PathLike[str]"],
    method: str = "ppl",
    *,
    threshold: Optional[float] = None,
    rule: str = "either",
    percentile: float = 95.0,
    size: int = 128,
    merge: Optional[int] = None,
    merge_unit: str = "words",
    pipeline: Pipeline = None,
    threads: Optional[int] = None,
    models: Optional[PathLike] = None,
) -> list[Chunk]:
    """Cuts a text, or a file (PDF, HTML, Markdown, text), into chunks.

    ``source`` is a file when it is a ``pathlib.Path`` (or other ``os.PathLike``) or a string
    naming an existing file (one line, no newline); any other string is the text itself.

    ``method``: ``"ppl"`` (perplexity minima of SmolLM2, Meta-Chunking), ``"margin"`` (the
    model judges split or keep), ``"semantic"`` (embedding-distance breakpoints at
    ``percentile``), ``"sentence"`` or ``"fixed"`` (``size`` tokens). ``threshold`` is the PPL
    or margin threshold (default 0), ``rule`` the PPL boundary rule (``"either"`` or
    ``"both"``). ``merge`` merges neighbouring chunks up to that many ``merge_unit``s
    (``"words"``, ``"tokens"``, ``"chars"``). ``pipeline`` (a TOML file or a mapping shaped
    like one, see ``pipelines/``) replaces all of these.

    Returns the chunks in order: their byte spans tile the UTF-8 text, and each carries the
    scores of its sentences (PPL: mean NLL in nats). Models load once per setting.

    >>> [c.text for c in metarag.chunk("One sentence. Another one.", method="sentence")]
    ['One sentence.', ' Another one.']
    """
    if pipeline is None:
        chunker: dict[str, Any] = {"method": method}
        if method in ("ppl", "margin"):
            chunker["threshold"] = 0.0 if threshold is None else float(threshold)
        if method == "ppl":
            chunker["rule"] = rule
        elif method == "semantic":
            chunker["percentile"] = float(percentile)
        elif method == "fixed":
            chunker["size"] = int(size)
        spec: dict[str, Any] = {"chunker": chunker}
        if merge is not None:
            spec["merge"] = {"target": int(merge), "unit": merge_unit}
        pipeline = spec
    args = dict(_pipeline_args(pipeline), threads=threads, models=None if models is None else os.fspath(models))
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_a_file(source)):
        return _native.chunk(path=os.fspath(source), **args)
    if not isinstance(source, str):
        raise SettingsError(f"chunk() takes a str or a path, not {type(source).__name__}")
    return _native.chunk(text=source, **args)


class Index:
    """A metarag index directory: chunks in tantivy (BM25) and Qdrant (dense vectors, embedded
    in-process). Use ``Index.open`` for an existing one, ``Index.create`` for a new one; close
    it (or use ``with``) to let another process write it.
    """

    def __init__(self, native: "_native.Index") -> None:
        self._native = native

    @classmethod
    def open(cls, dir: PathLike, *, threads: Optional[int] = None, models: Optional[PathLike] = None) -> "Index":
        """Opens the index in ``dir``; raises ``IndexNotFoundError`` if there is none."""
        return cls(_native.Index.open(os.fspath(dir), threads=threads, models=_opt_path(models)))

    @classmethod
    def create(
        cls,
        dir: PathLike,
        *,
        pipeline: Pipeline = None,
        threads: Optional[int] = None,
        models: Optional[PathLike] = None,
    ) -> "Index":
        """Creates an empty index in ``dir`` (a new or empty directory) with ``pipeline`` (a
        TOML file, a mapping shaped like one, or None for ``pipelines/default.toml``). An
        existing index there is opened and switched to ``pipeline``."""
        native = _native.Index.create(
            os.fspath(dir), threads=threads, models=_opt_path(models), **_pipeline_args(pipeline)
        )
        return cls(native)

    @property
    def dir(self) -> Path:
        """The index directory."""
        return Path(self._native.dir)

    @property
    def pipeline(self) -> str:
        """The index's pipeline as TOML."""
        return self._native.pipeline

    @property
    def documents(self) -> int:
        """Documents in the index."""
        return self._native.documents

    @property
    def chunks(self) -> int:
        """Chunks in the index."""
        return self._native.chunks

    def ingest(
        self,
        paths: Union[PathLike, Sequence[PathLike]],
        *,
        progress: bool = False,
        prune: bool = False,
        file_timeout: int = 60,
    ) -> IngestReport:
        """Chunks, embeds and indexes files, folders (recursively) and glob patterns.

        Unchanged files are skipped; a file that fails (corrupt PDF, binary, invalid UTF-8)
        is listed in ``report.failed`` with its path and the others are ingested. ``prune``
        removes documents whose files are not among ``paths``. ``progress`` draws a bar on
        stderr. Ctrl-C stops starting files: those in flight are written and committed, then
        ``KeyboardInterrupt`` is raised; running the same ingest again does the rest.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        return self._native.ingest([os.fspath(p) for p in paths], progress=progress, prune=prune, file_timeout=file_timeout)

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: str = "hybrid",
        path_prefix: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        candidates: int = 20,
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query``: ``mode`` ``"hybrid"`` (BM25 and dense lists
        fused by reciprocal rank), ``"bm25"`` or ``"dense"``; ``path_prefix`` (whole path
        components, as the files were given to ``ingest``) and ``kinds`` (``"pdf"``,
        ``"html"``, ``"markdown"``, ``"text"``) filter."""
        return self._native.search(
            query, k, mode=mode, path_prefix=path_prefix, kinds=None if kinds is None else list(kinds), candidates=candidates
        )

    def ask(
        self,
        question: str,
        *,
        samples: int = 8,
        k: int = 2,
        aggregate: str = "rpc",
        extractive: bool = True,
        seed: int = 0,
    ) -> Answer:
        """Answers ``question`` from the ``k`` best chunks: ``samples`` candidates are decoded
        together by the answer infiller and aggregated (``"rpc"``, ``"vote"``, ``"ppl"``);
        ``extractive`` answers copy a span of a chunk. The answer cites its chunks."""
        return self._native.ask(question, samples=samples, k=k, aggregate=aggregate, extractive=extractive, seed=seed)

    def chunk(self, text: str) -> list[Chunk]:
        """Cuts ``text`` with the index's own pipeline, as ingest would."""
        return self._native.chunk(text)

    def close(self) -> None:
        """Releases the index's stores and models; later calls raise ``MetaragError``."""
        self._native.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.dir)!r})"


def _opt_path(p: Optional[PathLike]) -> Optional[str]:
    return None if p is None else os.fspath(p)
