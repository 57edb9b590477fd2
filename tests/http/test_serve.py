"""HTTP tests of `metarag serve`: a real server process on loopback, a real HTTP client.

Run by tests/http/run.sh (which the Rust test `serve::http_tests_and_schemathesis` calls) with
METARAG_BIN (the binary) and METARAG_TEST_INDEX (an index of examples/corpus made with the
default pipeline). Every endpoint, bad JSON, oversized bodies, the bearer token, concurrent
searches, a graceful stop on SIGTERM, and schemathesis against /openapi.json.
"""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

BIN = os.environ["METARAG_BIN"]
INDEX = os.environ["METARAG_TEST_INDEX"]
MAX_BODY = 65536
ST = os.path.join(os.path.dirname(sys.executable), "st")

# (question, file, answer text), as in tests/index.rs
KNOWN = [
    ("What does the narrator ask to be called?", "moby-dick-loomings.pdf", "Ishmael"),
    ("How large was the loan completed in Holland?", "washington-1790.txt", "3,000,000 florins"),
    ("What is the code name of Debian release 11?", "debian-faq-getting-debian.html", "bullseye"),
]
ASK = "How large was the loan completed in Holland?"


class Server:
    """`metarag serve` on a free loopback port; stopped with SIGTERM."""

    def __init__(self, index, env=None):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--index", index, "--addr", "127.0.0.1:0", "--max-body", str(MAX_BODY),
             "--timeout", "300"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.log = []
        line = ""
        while "listening on" not in line:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("the server ended before listening: " + "".join(self.log))
            self.log.append(line)
        self.url = re.search(r"http://\S+", line).group(0)
        self.reader = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.reader.join(timeout=5)
        return code, "".join(self.log)


def call(url, path, body=None, raw=None, headers=None, method=None):
    """(status, parsed JSON body or None)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, headers=headers or {}, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text.decode(errors="replace")


@pytest.fixture(scope="module")
def cli_answer():
    """`metarag ask --json` of ASK, before any server holds the index."""
    out = subprocess.run([BIN, "ask", "--index", INDEX, ASK, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def server(cli_answer):
    s = Server(INDEX)
    yield s
    code, log = s.stop()
    assert code == 0, log
    assert "panicked" not in log, log


def test_health_counts_the_index(server):
    status, h = call(server.url, "/health")
    assert status == 200 and h["status"] == "ok", h
    assert h["documents"] == 4 and h["chunks"] > 4, h


def test_openapi_describes_every_endpoint(server):
    status, doc = call(server.url, "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/search", "/ask", "/chunk", "/health", "/openapi.json"} <= set(doc["paths"])


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_search_finds_the_known_answers(server, mode):
    for question, file, answer in KNOWN:
        status, hits = call(server.url, "/search", {"query": question, "k": 5, "mode": mode})
        assert status == 200, hits
        assert 0 < len(hits) <= 5
        assert any(h["path"].endswith(file) and answer in " ".join(h["text"].split()) for h in hits), \
            (mode, question, [h["path"] for h in hits])
        for h in hits:
            assert h["end"] > h["start"] and h["text"]


def test_search_filters_by_path_prefix(server):
    status, hits = call(server.url, "/search", {"query": "release", "k": 10, "path_prefix": "examples/corpus"})
    assert status == 200 and hits and all(h["path"].startswith("examples/corpus/") for h in hits), hits
    # whole path components only: "examples/corp" is no directory
    status, hits = call(server.url, "/search", {"query": "release", "k": 10, "path_prefix": "examples/corp"})
    assert status == 200 and hits == [], hits
    status, hits = call(server.url, "/search", {"query": "the", "k": 10, "kinds": ["pdf"]})
    assert status == 200 and hits and all(h["kind"] == "pdf" for h in hits), hits


def test_ask_answers_as_the_cli_does(server, cli_answer):
    status, a = call(server.url, "/ask", {"question": ASK})
    assert status == 200, a
    assert "3,000,000" in a["text"], a["text"]
    assert a["citations"] and any(c["path"].endswith("washington-1790.txt") for c in a["citations"])
    for key in ("question", "text", "confidence", "retrieved", "citations"):
        assert a[key] == cli_answer[key], key


def test_chunk_tiles_the_text(server):
    text = open(os.path.join(os.path.dirname(__file__), "../../examples/corpus/washington-1790.txt")).read()[:6000]
    status, chunks = call(server.url, "/chunk", {"text": text})
    assert status == 200, chunks
    assert len(chunks) > 1
    at = 0
    for i, c in enumerate(chunks):
        assert c["chunk"] == i and c["start"] == at and c["end"] > c["start"]
        at = c["end"]
    assert at == len(text.encode())
    assert "".join(c["text"] for c in chunks) == text


@pytest.mark.parametrize("path,raw", [
    ("/search", b"{not json"),
    ("/search", b'{"query": 3}'),
    ("/search", b'{"query": "x", "unknown": 1}'),
    ("/search", b'{"query": "   "}'),
    ("/search", b'{"query": "x", "k": 0}'),
    ("/search", b'{"query": "x", "mode": "sparse"}'),
    ("/search", b""),
    ("/ask", b'{"question": ""}'),
    ("/ask", b'{"question": "x", "aggregate": "best"}'),
    ("/ask", b'{"question": "x", "samples": 1000}'),
    ("/chunk", b'{"text": ""}'),
    ("/chunk", b"[1, 2]"),
])
def test_bad_requests_get_400_with_a_message(server, path, raw):
    status, body = call(server.url, path, raw=raw)
    assert status == 400, (status, body)
    assert isinstance(body, dict) and body["error"], body


def test_oversized_body_gets_413(server):
    status, body = call(server.url, "/search", raw=json.dumps({"query": "x" * (MAX_BODY + 10)}).encode())
    assert status == 413, (status, body)
    assert body["error"], body


def test_unknown_paths_and_methods_are_4xx(server):
    assert call(server.url, "/nothing")[0] == 404
    assert call(server.url, "/search", method="GET")[0] == 405


def test_concurrent_searches_all_succeed(server):
    queries = [q for q, _, _ in KNOWN] * 11
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda q: call(server.url, "/search", {"query": q, "k": 3}), queries))
    assert all(status == 200 and len(hits) == 3 for status, hits in results), [s for s, _ in results]


def test_bearer_token_is_enforced_and_never_logged():
    with tempfile.TemporaryDirectory() as tmp:
        index = os.path.join(tmp, "idx")
        shutil.copytree(INDEX, index)  # its own vector store: the module's server holds INDEX's
        s = Server(index, env={"METARAG_SERVE_TOKEN": "s3cret-token"})
        try:
            body = {"query": "Ishmael", "k": 1}
            assert call(s.url, "/search", body)[0] == 401
            assert call(s.url, "/search", body, headers={"Authorization": "Bearer wrong"})[0] == 401
            status, hits = call(s.url, "/search", body, headers={"Authorization": "Bearer s3cret-token"})
            assert status == 200 and len(hits) == 1
            assert call(s.url, "/health")[0] == 200
        finally:
            code, log = s.stop()
        assert code == 0 and "s3cret-token" not in log, log


def test_an_open_address_needs_a_token():
    out = subprocess.run([BIN, "serve", "--index", INDEX, "--addr", "0.0.0.0:0"], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "METARAG_SERVE_TOKEN"})
    assert out.returncode != 0 and "METARAG_SERVE_TOKEN" in out.stderr, out.stderr


@pytest.mark.parametrize("paths,examples", [("^/(search|chunk|health|openapi.json)$", 40), ("^/ask$", 6)])
def test_schemathesis_finds_no_server_error(server, paths, examples):
    out = subprocess.run(
        [ST, "run", server.url + "/openapi.json", "--checks", "not_a_server_error,status_code_conformance",
         "--include-path-regex", paths, "-n", str(examples), "--request-timeout", "300",
         "--generation-deterministic", "--suppress-health-check", "all"],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
