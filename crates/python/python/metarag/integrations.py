"""Retriever adapters: a metarag ``Index`` as a LlamaIndex or LangChain retriever.

These need the optional extras (``pip install metarag[llamaindex]`` or ``metarag[langchain]``);
the core package imports neither.

Example::

    from metarag import Index
    from metarag.integrations import langchain_retriever
    retriever = langchain_retriever(Index.open("idx"), k=4)
    docs = retriever.invoke("who is Ishmael")
"""

from __future__ import annotations

from typing import Any

from . import Hit, Index


def _metadata(hit: Hit) -> dict[str, Any]:
    return {
        "path": hit.path,
        "chunk": hit.chunk,
        "start": hit.start,
        "end": hit.end,
        "kind": hit.kind,
        "score": hit.score,
        "id": f"{hit.path}#{hit.chunk}",
    }


def langchain_retriever(index: Index, k: int = 4, mode: str = "hybrid") -> Any:
    """A ``langchain_core`` ``BaseRetriever`` over ``index`` (documents carry path, span, score)."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class MetaragRetriever(BaseRetriever):
        """metarag hybrid search as a LangChain retriever."""

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return [Document(page_content=h.text, metadata=_metadata(h)) for h in index.search(query, k, mode=mode)]

    return MetaragRetriever()


def llamaindex_retriever(index: Index, k: int = 4, mode: str = "hybrid") -> Any:
    """A ``llama_index.core`` ``BaseRetriever`` over ``index`` (nodes carry path, span, score)."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    class MetaragRetriever(BaseRetriever):
        """metarag hybrid search as a LlamaIndex retriever."""

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = index.search(query_bundle.query_str, k, mode=mode)
            return [
                NodeWithScore(node=TextNode(text=h.text, id_=f"{h.path}#{h.chunk}", metadata=_metadata(h)), score=h.score)
                for h in hits
            ]

    return MetaragRetriever()
