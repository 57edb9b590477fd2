"""Tests of the Python package `metarag` against the real models (run by tests/python/run.sh).

What they check: chunks tile the text and match `metarag chunk` byte for byte (one
implementation behind both); an ingest of examples/corpus finds known answers and reports bad
files with their paths; `ask` answers with citations that point at the chunk holding the answer;
errors are typed exceptions carrying the path; searches from several threads at once agree.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

import metarag

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus"
WASHINGTON = CORPUS / "washington-1790.txt"


def assert_tiles(chunks: list[metarag.Chunk], data: bytes) -> None:
    """The chunks' spans cover the bytes exactly, in order, and each text is its span."""
    assert chunks, "no chunks"
    assert chunks[0].start == 0 and chunks[-1].end == len(data)
    for i, (a, b) in enumerate(zip(chunks, chunks[1:])):
        assert a.end == b.start, f"gap or overlap between chunk {i} and {i + 1}"
    for c in chunks:
        assert c.start < c.end
        assert data[c.start : c.end].decode("utf-8") == c.text
    assert [c.index for c in chunks] == list(range(len(chunks)))


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    """examples/corpus ingested once with the default pipeline (PPL chunks merged to 120 words)."""
    idx = metarag.Index.create(tmp_path_factory.mktemp("py") / "idx")
    report = idx.ingest([CORPUS])
    assert report.failed == [], report.failed
    assert report.ingested == 4 and report.files == 4
    yield idx
    idx.close()


def test_chunk_tiles_a_text_and_scores_each_sentence() -> None:
    text = WASHINGTON.read_text(encoding="utf-8")
    chunks = metarag.chunk(text)  # PPL, θ = 0
    assert_tiles(chunks, text.encode("utf-8"))
    assert len(chunks) > 3
    scores = [s for c in chunks for s in c.scores]
    assert scores and all(math.isfinite(s) and s > 0 for s in scores), "PPL scores are mean NLLs in nats"


def test_chunk_of_a_file_equals_the_cli() -> None:
    chunks = metarag.chunk(WASHINGTON, merge=120)
    assert_tiles(chunks, WASHINGTON.read_bytes())
    assert all(c.doc.endswith("washington-1790.txt") for c in chunks)
    cli = subprocess.run(
        [os.environ["METARAG_BIN"], "chunk", str(WASHINGTON), "--merge-to", "120", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    spans = [(r["start"], r["end"]) for r in map(json.loads, cli.stdout.splitlines())]
    assert [(c.start, c.end) for c in chunks] == spans


def test_a_string_naming_a_file_is_the_file_and_other_methods_work() -> None:
    assert [c.text for c in metarag.chunk(str(WASHINGTON), "sentence")][:1] == [
        metarag.chunk(WASHINGTON.read_text(encoding="utf-8"), "sentence")[0].text
    ]
    two = metarag.chunk("One sentence. Another one.", method="sentence")
    assert [(c.start, c.end, c.text) for c in two] == [(0, 13, "One sentence."), (13, 26, " Another one.")]
    assert two[0].scores == []  # the baselines have no scores
    fixed = metarag.chunk(WASHINGTON, method="fixed", size=64)
    assert_tiles(fixed, WASHINGTON.read_bytes())


def test_bad_chunk_settings_and_files_raise_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(metarag.SettingsError, match="bogus"):
        metarag.chunk("Some text.", pipeline={"chunker": {"method": "ppl"}, "bogus": 1})
    with pytest.raises(ValueError):  # SettingsError is a ValueError
        metarag.chunk("Some text.", method="nonsense")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n this is not a PDF body")
    with pytest.raises(metarag.MetaragError) as e:
        metarag.chunk(broken)
    assert e.value.path == str(broken)
    assert "broken.pdf" in str(e.value)


def test_a_missing_index_raises_index_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "no-index-here"
    with pytest.raises(metarag.IndexNotFoundError) as e:
        metarag.Index.open(missing)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, metarag.MetaragError)
    assert e.value.path == str(missing) and e.value.filename == str(missing)
    assert "not a metarag index" in str(e.value)


def test_ingest_then_search_finds_known_answers(index: metarag.Index) -> None:
    assert index.documents == 4 and index.chunks > 10
    hits = index.search("How large was the loan completed in Holland?", k=3)
    assert len(hits) == 3
    assert hits[0].path.endswith("washington-1790.txt")
    assert "3,000,000" in hits[0].text
    assert hits[0].bm25_rank is not None and hits[0].dense_rank is not None  # fused from both lists
    source = Path(hits[0].path)
    if not source.is_absolute():
        source = ROOT / source
    assert source.read_bytes()[hits[0].start : hits[0].end].decode("utf-8") == hits[0].text
    ishmael = index.search("Call me Ishmael", k=5, mode="bm25")
    assert ishmael and ishmael[0].path.endswith("moby-dick-loomings.pdf") and ishmael[0].kind == "pdf"
    md = CORPUS / "debian-faq-next-release.md"
    only_md = index.search("Debian release", k=5, path_prefix=str(md))
    assert only_md and all(h.path == str(md) for h in only_md)
    assert index.search("Debian release", k=5, path_prefix=str(CORPUS / "debian-faq-next")) == []  # whole components
    with pytest.raises(metarag.SettingsError):
        index.search("x", mode="fuzzy")


def test_reingest_skips_unchanged_files_and_reports_bad_ones(index: metarag.Index, tmp_path: Path) -> None:
    again = index.ingest(CORPUS)
    assert again.unchanged == 4 and again.ingested == 0 and again.failed == []
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> trailer")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    good = tmp_path / "good.md"
    good.write_text("# Lighthouses\n\nThe Eddystone lighthouse stands on rocks off Plymouth.\n", encoding="utf-8")
    report = index.ingest([corrupt, binary, good])
    failed = dict(report.failed)
    assert set(failed) == {str(corrupt), str(binary)}, report.failed
    assert report.ingested == 1
    assert index.documents == 5
    assert index.search("Eddystone lighthouse Plymouth", k=1)[0].path == str(good)
    assert json.loads(report.json)["report"]["ingested"] == 1
    pruned = index.ingest([CORPUS], prune=True)
    assert pruned.pruned == 1 and index.documents == 4


def test_ask_answers_with_citations(index: metarag.Index) -> None:
    answer = index.ask("How large was the loan completed in Holland?", samples=4)
    assert "3,000,000" in answer.text
    assert 0.0 <= answer.confidence <= 1.0
    assert answer.citations, "an answer cites its chunks"
    cited = answer.citations[0]
    assert cited.id in answer.retrieved
    assert cited.path is not None and cited.path.endswith("washington-1790.txt")
    assert cited.start is not None and cited.end is not None
    assert answer.text in WASHINGTON.read_bytes()[cited.start : cited.end].decode("utf-8")
    assert json.loads(answer.json)["text"] == answer.text
    with pytest.raises(metarag.SettingsError):
        index.ask("Who?", samples=0)


def test_index_chunk_uses_the_index_pipeline(index: metarag.Index) -> None:
    text = WASHINGTON.read_text(encoding="utf-8")
    assert [(c.start, c.end) for c in index.chunk(text)] == [(c.start, c.end) for c in metarag.chunk(text, merge=120)]
    assert 'method = "ppl"' in index.pipeline


def test_searches_from_threads_agree(index: metarag.Index) -> None:
    queries = ["loan in Holland", "Call me Ishmael", "next Debian release", "getting Debian"] * 3
    expected = {q: [h.id for h in index.search(q, k=5)] for q in set(queries)}
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def work(i: int, q: str) -> None:
        try:
            results[i] = [h.id for h in index.search(q, k=5)]
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, q)) for i, q in enumerate(queries)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(results[i] == expected[q] for i, q in enumerate(queries))


def test_ctrl_c_stops_an_ingest_and_a_rerun_completes_it(tmp_path: Path) -> None:
    idx = metarag.Index.create(tmp_path / "interrupted")  # PPL: the corpus takes ~20 s
    # A shell without job control starts background jobs with SIGINT ignored, and Python then
    # keeps it ignored: a test run as such a job would never see the signal. Install the
    # handler an interactive Python has, for this test only.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            idx.ingest([CORPUS])
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    partial = idx.documents
    assert partial < 4, "the ingest stopped early"
    report = idx.ingest([CORPUS])
    assert report.failed == [] and report.unchanged == partial and report.ingested == 4 - partial
    assert idx.documents == 4
    assert idx.search("How large was the loan completed in Holland?", k=1)[0].path.endswith("washington-1790.txt")
    idx.close()


def test_a_closed_index_raises_and_frees_the_directory(tmp_path: Path) -> None:
    with metarag.Index.create(tmp_path / "small", pipeline={"chunker": {"method": "sentence"}}) as idx:
        idx.ingest([WASHINGTON])
        n = idx.chunks
        assert n > 10
    with pytest.raises(metarag.MetaragError, match="closed"):
        idx.search("loan")
    reopened = metarag.Index.open(tmp_path / "small")
    assert reopened.chunks == n
    reopened.close()
