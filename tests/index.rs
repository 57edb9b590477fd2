//! `metarag ingest` and `metarag search` end to end with the real models: known answers in
//! every mode, re-ingest idempotency, kill -9 and rerun, bad files among good ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metarag_index::{ChunkRecord, Index, Mode, Query};

use crate::root;

pub fn metarag(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metarag")).args(args).current_dir(root()).output().expect("run metarag")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metarag-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The example corpus ingested once with the default pipeline (PPL chunks merged to 120 words).
pub fn example_index() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tmp("examples");
        let out = metarag(&["ingest", "examples/corpus", "--index", s(&dir), "--verify", "-q"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ingest failed: {err}");
        assert!(err.contains("ingested 4 of 4 files") && err.contains("(verified)"), "{err}");
        dir
    })
}

/// The known answers of examples/README.md: (question, file, answer text).
pub const KNOWN: [(&str, &str, &str); 6] = [
    ("What does the narrator ask to be called?", "moby-dick-loomings.pdf", "Ishmael"),
    ("What does Cato do with a philosophical flourish?", "moby-dick-loomings.pdf", "upon his sword"),
    ("How large was the loan completed in Holland?", "washington-1790.txt", "3,000,000 florins"),
    ("Which district is to become a distinct member of the Union?", "washington-1790.txt", "Kentucky"),
    (
        "How many packages had been modified for security hardening?",
        "debian-faq-next-release.md",
        "around 400 packages",
    ),
    ("What is the code name of Debian release 11?", "debian-faq-getting-debian.html", "bullseye"),
];

pub fn collapse(t: &str) -> String {
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn known_answers_are_retrieved_in_every_mode() {
    let dir = example_index();
    for mode in ["bm25", "dense", "hybrid"] {
        let mut misses = Vec::new();
        for (q, file, answer) in KNOWN {
            let out = metarag(&["search", "--index", s(dir), q, "--mode", mode, "-k", "5", "--json"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
            assert!(hits.len() <= 5 && !hits.is_empty(), "{mode} {q}: {} hits", hits.len());
            let found = hits.iter().position(|h| {
                h["path"].as_str().is_some_and(|p| p.ends_with(file))
                    && collapse(h["text"].as_str().unwrap_or("")).contains(answer)
            });
            // every hit's text is exactly its span of the source document
            for h in &hits {
                assert!(h["end"].as_u64() > h["start"].as_u64());
            }
            if found.is_none() {
                misses.push(q);
            }
        }
        assert!(misses.is_empty(), "{mode}: answer not in the top 5 for {misses:?}");
    }
}

#[test]
fn library_search_matches_the_cli_and_filters_apply() {
    let index = Index::open(example_index()).expect("open");
    let hits = index.search(&Query::new("Call me Ishmael").k(3).mode(Mode::Bm25)).expect("search");
    assert!(hits[0].record.path.ends_with("moby-dick-loomings.pdf"), "{:?}", hits[0].record.path);
    let only_text =
        index.search(&Query::new("Debian release code name").k(10).mode(Mode::Bm25).kind("text")).expect("search");
    assert!(only_text.iter().all(|h| h.record.kind == metarag_core::DocKind::Text));
    let under = index
        .search(&Query::new("the").k(50).mode(Mode::Bm25).path_prefix("examples/corpus/washington-1790.txt"))
        .expect("search");
    assert!(!under.is_empty() && under.iter().all(|h| h.record.path == "examples/corpus/washington-1790.txt"));
    // dense needs an embedder: a clear error, not a panic
    let e = index.search(&Query::new("x").mode(Mode::Dense)).unwrap_err().to_string();
    assert!(e.contains("embedder"), "{e}");
    // every stored chunk is its document's span
    let text = std::fs::read_to_string(root().join("examples/corpus/washington-1790.txt")).expect("read");
    for h in &under {
        assert_eq!(h.record.text, text[h.record.start as usize..h.record.end as usize]);
    }
}

/// A pipeline with no language model (sentence chunks merged to 60 words): fast, for the
/// write-path tests; the embedder is the real one.
fn fast_pipeline(dir: &Path) -> PathBuf {
    let p = dir.join("fast.toml");
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(&p, "[chunker]\nmethod = \"sentence\"\n\n[merge]\ntarget = 60\nunit = \"words\"\n").expect("write");
    p
}

/// A corpus of many small files cut from the example texts.
fn small_corpus(dir: &Path, files: usize) -> PathBuf {
    let c = dir.join("corpus");
    std::fs::create_dir_all(&c).expect("mkdir");
    let text = std::fs::read_to_string(root().join("examples/corpus/washington-1790.txt")).expect("read");
    let words: Vec<&str> = text.split_whitespace().collect();
    let per = words.len() / files;
    for i in 0..files {
        std::fs::write(c.join(format!("part-{i:02}.txt")), words[i * per..(i + 1) * per].join(" ")).expect("write");
    }
    c
}

/// Everything an index holds: manifest documents and the records of both stores.
type Dump = (BTreeMap<String, (String, u32)>, Vec<ChunkRecord>, Vec<ChunkRecord>);

/// The dense vectors of an index, by point id.
fn dense_of(dir: &Path) -> BTreeMap<u64, Vec<f32>> {
    let index = Index::open(dir).expect("open");
    let ids = index.vectors().ids().expect("ids");
    let v: BTreeMap<u64, Vec<f32>> = index.vectors().dense_vectors(&ids).expect("vectors").into_iter().collect();
    assert_eq!(v.len(), ids.len(), "{}: a point without its vector", dir.display());
    v
}

/// Asserts two indexes hold the same vectors for the same ids. A rerun embeds its documents in
/// other batches than an uninterrupted ingest, which moves the last bits of a float.
fn assert_same_vectors(got: &Path, want: &BTreeMap<u64, Vec<f32>>, what: &str) {
    let got = dense_of(got);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: other vector ids");
    for (id, v) in &got {
        let diff = v.iter().zip(&want[id]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{what}: point {id}'s vector differs by {diff}");
    }
}

fn dump(dir: &Path) -> Dump {
    let index = Index::open(dir).expect("open");
    let n = index.verify().unwrap_or_else(|e| panic!("inconsistent index {}: {e}", dir.display()));
    let docs: BTreeMap<_, _> =
        index.manifest().documents.iter().map(|(k, v)| (k.clone(), (v.hash.clone(), v.chunks))).collect();
    let ids = index.vectors().ids().expect("ids");
    assert_eq!(ids.len() as u64, n);
    let mut vec_recs = index.vectors().get(&ids).expect("get");
    vec_recs.sort_by_key(|r| r.id);
    let mut lex_recs = index.lexical().expect("lexical").get(&ids).expect("get");
    lex_recs.sort_by_key(|r| r.id);
    assert!(index.manifest().pending.is_empty());
    (docs, vec_recs, lex_recs)
}

/// One chunking path: `metarag chunk --pipeline` with the index's pipeline prints exactly the
/// chunks ingest wrote (same numbering, spans and texts).
#[test]
fn chunk_with_the_index_pipeline_prints_the_indexed_chunks() {
    let (_, _, records) = dump(example_index());
    let indexed: BTreeSet<(String, u32, u64, u64, String)> = records
        .into_iter()
        .map(|r| (r.path.rsplit('/').next().unwrap_or_default().to_string(), r.chunk, r.start, r.end, r.text))
        .collect();
    let out = metarag(&["chunk", "examples/corpus", "--pipeline", "pipelines/default.toml", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: BTreeSet<(String, u32, u64, u64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSONL");
            let doc = v["doc"].as_str().expect("doc");
            (
                doc.rsplit('/').next().unwrap_or_default().to_string(),
                v["chunk"].as_u64().expect("chunk") as u32,
                v["start"].as_u64().expect("start"),
                v["end"].as_u64().expect("end"),
                v["text"].as_str().expect("text").to_string(),
            )
        })
        .collect();
    assert!(indexed.len() > 20, "{} chunks", indexed.len());
    assert_eq!(printed, indexed);
}

#[test]
fn kill_during_ingest_then_rerun_ends_identical() {
    let base = tmp("kill");
    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 24);
    let args = |idx: &Path| -> Vec<String> {
        vec![
            "ingest".into(),
            s(&corpus).into(),
            "--index".into(),
            s(idx).into(),
            "--pipeline".into(),
            s(&pipeline).into(),
            "--batch-docs".into(),
            "2".into(),
            "--threads".into(),
            "1".into(),
            "-q".into(),
        ]
    };
    let clean = base.join("clean");
    let out = Command::new(env!("CARGO_BIN_EXE_metarag")).args(args(&clean)).current_dir(root()).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = dump(&clean);
    assert_eq!(want.0.len(), 24);

    // Kill at several points: after the first commit, and a little later each time.
    for (round, extra_ms) in [0u64, 150, 400].into_iter().enumerate() {
        let idx = base.join(format!("killed-{round}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_metarag"))
            .args(args(&idx))
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let t = Instant::now();
        // wait until at least one batch is committed
        loop {
            // read the manifest file only: opening the stores beside a live writer is not allowed
            let done = metarag_index::manifest::Manifest::load(&idx).map_or(0, |m| m.documents.len());
            if done >= 2 || t.elapsed() > Duration::from_secs(120) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.kill().expect("kill -9"); // SIGKILL on Unix
        let status = child.wait().expect("wait");
        let partial = metarag_index::manifest::Manifest::load(&idx).map_or(0, |m| m.documents.len());
        eprintln!("round {round}: killed ({status:?}) with {partial} of 24 documents committed");

        let out =
            Command::new(env!("CARGO_BIN_EXE_metarag")).args(args(&idx)).current_dir(root()).output().expect("rerun");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rerun: {err}");
        eprintln!(
            "round {round}: rerun {}",
            if err.contains("recovered") { "recovered a pending batch" } else { "found no pending batch" }
        );
        assert_eq!(dump(&idx), want, "round {round}: the rerun index differs from an uninterrupted ingest");
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// Runs `metarag ingest ARGS` with extra environment (crash plans), without core dumps, from
/// `cwd` (not the checkout: an aborted process must not leave files there).
fn ingest_env(args: &[String], env: &[(&str, String)], cwd: &Path) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("ulimit -c 0; exec \"$0\" \"$@\"").arg(env!("CARGO_BIN_EXE_metarag")).args(args);
    cmd.current_dir(cwd).env("METARAG_MODELS", root().join("models"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run metarag ingest")
}

/// The crash points an uninterrupted `metarag ingest ARGS` passes, in order (from a copy of
/// `start`, or a new index when `start` is None).
fn crash_points(args: &dyn Fn(&Path) -> Vec<String>, start: Option<&Path>, work: &Path) -> Vec<String> {
    let idx = work.join("count");
    let _ = std::fs::remove_dir_all(&idx);
    if let Some(s) = start {
        copy_dir(s, &idx);
    }
    let log = work.join("points.log");
    let _ = std::fs::remove_file(&log);
    let out = ingest_env(&args(&idx), &[("METARAG_CRASH_LOG", s(&log).to_string())], work);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&idx);
    text.lines().map(|l| l.split_once(' ').map_or(l, |(_, name)| name).to_string()).collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// `n` crash points spread evenly over `1..=total` (1-based), first and last included.
fn spread(total: usize, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).map(|i| 1 + i * (total - 1) / (n - 1).max(1)).collect();
    v.dedup();
    v
}

/// The crash points to kill at (1-based): the first point of every kind, so that each step of
/// the write path is interrupted at least once, and at least `n` in all, spread over the run
/// (the last point included).
fn kill_points(names: &[String], n: usize) -> Vec<usize> {
    let mut v = std::collections::BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        if !names[..i].contains(name) {
            v.insert(i + 1);
        }
    }
    let kinds = v.len();
    v.extend(spread(names.len(), n.saturating_sub(kinds).max(2)));
    v.into_iter().collect()
}

/// Kills `ingest ARGS` (from copies of `start`) at each of `points`, reruns it, and asserts
/// each rerun index equals `want` / `want_vectors`, logging a line per point.
fn kill_and_rerun(
    args: &dyn Fn(&Path) -> Vec<String>,
    start: Option<&Path>,
    names: &[String],
    points: &[usize],
    want: &Dump,
    want_vectors: &BTreeMap<u64, Vec<f32>>,
    work: &Path,
) {
    for &k in points {
        let idx = work.join(format!("at-{k}"));
        let _ = std::fs::remove_dir_all(&idx);
        if let Some(s) = start {
            copy_dir(s, &idx);
        }
        let out = ingest_env(&args(&idx), &[("METARAG_CRASH_AT", k.to_string())], work);
        assert!(!out.status.success(), "point {k} ({}) was not reached: the run ended normally", names[k - 1]);
        let out = ingest_env(&args(&idx), &[], work);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rerun after point {k} ({}): {err}", names[k - 1]);
        let what = format!("killed at point {k} of {} ({})", names.len(), names[k - 1]);
        assert_eq!(&dump(&idx), want, "{what}: the rerun index differs from an uninterrupted ingest");
        assert_same_vectors(&idx, want_vectors, &what);
        eprintln!("{what}: rerun {}, index identical", if err.contains("recovered") { "recovered" } else { "clean" });
        let _ = std::fs::remove_dir_all(&idx);
    }
}

/// The kill-at-any-point harness: crash points on the write path (`metarag_index::crash`) are
/// counted in an uninterrupted ingest, then the process aborts at the first point of every
/// kind and at points spread over the run (as `kill -9` would), the same command is rerun,
/// and the index must equal the uninterrupted one: same documents, chunk ids, texts,
/// vectors; nothing pending. The same for an ingest with `--prune` that also replaces
/// changed files and adds a new one.
#[test]
fn killed_at_any_write_step_then_rerun_ends_identical() {
    let base = tmp("crash");
    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 18);
    let args = |idx: &Path| -> Vec<String> {
        [s(&corpus), "--index", s(idx), "--pipeline", s(&pipeline), "--batch-docs", "3", "--threads", "1", "-q"]
            .iter()
            .fold(vec!["ingest".to_string()], |mut v, a| {
                v.push(a.to_string());
                v
            })
    };
    let clean = base.join("clean");
    let out = ingest_env(&args(&clean), &[], &base);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = dump(&clean);
    let want_vectors = dense_of(&clean);
    let names = crash_points(&args, None, &base);
    assert!(names.len() >= 60, "only {} crash points: {names:?}", names.len());
    for kind in ["batch.pending", "batch.deleted", "batch.vectors", "batch.lexical", "commit.vectors", "batch.done"] {
        assert!(names.iter().any(|n| n == kind), "no {kind} point in {names:?}");
    }
    let n = std::env::var("METARAG_KILL_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(12usize);
    kill_and_rerun(&args, None, &names, &kill_points(&names, n), &want, &want_vectors, &base);

    // --prune, two changed files (one shorter, one longer), one new file, two deleted
    let prune_args = |idx: &Path| {
        let mut a = args(idx);
        a.push("--prune".into());
        a
    };
    std::fs::write(corpus.join("part-03.txt"), "A short replacement. It has two sentences.").expect("write");
    let longer = std::fs::read_to_string(corpus.join("part-04.txt")).expect("read").repeat(3);
    std::fs::write(corpus.join("part-04.txt"), longer).expect("write");
    std::fs::write(corpus.join("part-99.txt"), "A new file. It arrives late.").expect("write");
    std::fs::remove_file(corpus.join("part-07.txt")).expect("rm");
    std::fs::remove_file(corpus.join("part-11.txt")).expect("rm");
    let clean2 = base.join("clean-prune");
    copy_dir(&clean, &clean2);
    let out = ingest_env(&prune_args(&clean2), &[], &base);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want2 = dump(&clean2);
    assert_eq!(want2.0.len(), 17, "18 - 2 deleted + 1 new");
    let want2_vectors = dense_of(&clean2);
    let names2 = crash_points(&prune_args, Some(&clean), &base);
    assert!(names2.iter().any(|n| n == "recover.deleted"), "the prune passes no recovery point: {names2:?}");
    kill_and_rerun(&prune_args, Some(&clean), &names2, &kill_points(&names2, n / 2), &want2, &want2_vectors, &base);
    let _ = std::fs::remove_dir_all(&base);
}

/// Readers during writes: searches in a loop, from other processes (`metarag search`, hybrid
/// and BM25) and from this one (the library, which also checks that both stores hold exactly
/// the manifest's chunks), while `metarag ingest` commits one document per batch. Every search
/// must succeed and return only chunks of committed documents, each the exact span of its file.
#[test]
fn searches_during_an_ingest_see_whole_committed_documents() {
    let base = tmp("readers");
    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 60);
    let idx = base.join("idx");
    let ingest = |paths: &str| {
        Command::new(env!("CARGO_BIN_EXE_metarag"))
            .args(["ingest", paths, "--index", s(&idx), "--pipeline", s(&pipeline), "--batch-docs", "1"])
            .args(["--threads", "1", "-q"])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ingest")
    };
    let first = ingest(s(&corpus.join("part-00.txt"))).wait_with_output().expect("first ingest");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    let check = |hits: &[serde_json::Value], committed: &BTreeMap<String, u32>, who: &str| {
        for h in hits {
            let (path, doc) = (h["path"].as_str().expect("path"), h["doc"].as_str().expect("doc"));
            let chunk = h["chunk"].as_u64().expect("chunk") as u32;
            assert!(committed.get(doc).is_some_and(|&n| chunk < n), "{who}: {doc} #{chunk} is not committed");
            let file = std::fs::read_to_string(path).expect("read corpus file");
            let (a, b) = (h["start"].as_u64().expect("start") as usize, h["end"].as_u64().expect("end") as usize);
            assert_eq!(h["text"].as_str(), file.get(a..b), "{who}: {doc} #{chunk} is not its file's span");
        }
    };
    let committed_now = || -> BTreeMap<String, u32> {
        let m = metarag_index::manifest::Manifest::load(&idx).expect("manifest");
        m.documents.iter().map(|(d, e)| (d.clone(), e.chunks)).collect()
    };

    let mut child = ingest(s(&corpus));
    let (mut cli, mut lib, mut seen_docs) = (0, 0, Vec::new());
    loop {
        let running = child.try_wait().expect("try_wait").is_none();
        let mode = if cli % 2 == 0 { "hybrid" } else { "bm25" };
        let out = metarag(&["search", "--index", s(&idx), "the people of the United States", "--mode", mode, "--json"]);
        assert!(out.status.success(), "search {cli} during the ingest: {}", String::from_utf8_lossy(&out.stderr));
        let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json hits");
        // the manifest only grows during this ingest: what the search saw is committed now
        check(&hits, &committed_now(), &format!("cli search {cli} ({mode})"));
        cli += 1;

        let index = Index::open(&idx).expect("library open during the ingest");
        let n = index.verify().unwrap_or_else(|e| panic!("library read {lib}: inconsistent index: {e}"));
        let committed: BTreeMap<String, u32> =
            index.manifest().documents.iter().map(|(d, e)| (d.clone(), e.chunks)).collect();
        assert!(index.manifest().pending.is_empty(), "library read {lib} saw a batch in flight");
        let hits = index.search(&Query::new("the people of the United States").k(10).mode(Mode::Bm25)).expect("search");
        let hits: Vec<serde_json::Value> = hits.iter().map(|h| serde_json::to_value(h).expect("json")).collect();
        check(&hits, &committed, &format!("library read {lib}"));
        seen_docs.push((committed.len(), n));
        drop(index);
        lib += 1;
        if !running {
            break;
        }
    }
    let out = child.wait_with_output().expect("ingest");
    assert!(out.status.success(), "the ingest failed beside the readers: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "{cli} CLI searches and {lib} library reads during the ingest, all consistent; (documents, chunks) seen: {seen_docs:?}"
    );
    assert_eq!(committed_now().len(), 60);
    // 60 batches take seconds; a reader that had to wait for the whole ingest sees all 60
    assert!(seen_docs.iter().any(|&(d, _)| d > 1 && d < 60), "no reader got in between batches: {seen_docs:?}");
    let _ = std::fs::remove_dir_all(&base);
}

/// `--shard 1/2` then `--shard 2/2` write what one ingest writes; `--prune` in a part only
/// removes that part's documents.
#[test]
fn shards_together_equal_one_ingest() {
    let base = tmp("shards");
    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 12);
    let run = |idx: &Path, extra: &[&str]| {
        let mut a = vec!["ingest", s(&corpus), "--index", s(idx), "--pipeline", s(&pipeline), "-q", "--json"];
        a.extend_from_slice(extra);
        let out = metarag(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json report")
    };
    let (one, two) = (base.join("one"), base.join("two"));
    run(&one, &[]);
    let a = run(&two, &["--shard", "1/2"]);
    let b = run(&two, &["--shard", "2/2"]);
    let (na, nb) = (a["report"]["ingested"].as_u64().expect("n"), b["report"]["ingested"].as_u64().expect("n"));
    assert!(na > 0 && nb > 0 && na + nb == 12, "parts of 12 files: {na} + {nb}");
    assert_eq!(a["report"]["other_shards"].as_u64(), Some(nb));
    assert_eq!(dump(&two), dump(&one), "two parts differ from one ingest");
    assert_same_vectors(&two, &dense_of(&one), "two parts");

    // a file of part 1 disappears: part 2's --prune keeps it, part 1's removes it
    let shard1 = metarag_index::ingest::Shard { part: 1, of: 2 };
    let gone = (0..12)
        .map(|i| corpus.join(format!("part-{i:02}.txt")))
        .find(|p| shard1.holds(&metarag_index::document_id(p)))
        .expect("a file of part 1");
    std::fs::remove_file(&gone).expect("rm");
    assert_eq!(run(&two, &["--shard", "2/2", "--prune"])["report"]["pruned"], 0);
    assert_eq!(run(&two, &["--shard", "1/2", "--prune"])["report"]["pruned"], 1);
    assert_eq!(dump(&two).0.len(), 11);
    let out = metarag(&["ingest", s(&corpus), "--index", s(&two), "--shard", "3/2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("3/2") && err.contains("PART/COUNT"), "{err}");
    let _ = std::fs::remove_dir_all(&base);
}

/// One writer at a time: readers take turns with an ingest, a second writer is refused with a
/// message (it would overwrite the first one's manifest).
#[test]
fn a_second_writer_is_refused_while_readers_are_not() {
    let base = tmp("writers");
    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 2);
    let idx = base.join("idx");
    let out = metarag(&["ingest", s(&corpus), "--index", s(&idx), "--pipeline", s(&pipeline), "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = metarag_core::pipeline::Pipeline::from_file(&pipeline).expect("pipeline");
    let writer = Index::create_or_open(&idx, &p, &metarag_index::StoreConfig::Embedded).expect("first writer");
    let out = metarag(&["ingest", s(&corpus), "--index", s(&idx), "--pipeline", s(&pipeline), "-q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another process is writing this index") && err.contains(s(&idx)), "{err}");
    let out = metarag(&["search", "--index", s(&idx), "--mode", "bm25", "people"]);
    assert!(out.status.success(), "a reader beside a writer: {}", String::from_utf8_lossy(&out.stderr));
    drop(writer);
    let out = metarag(&["ingest", s(&corpus), "--index", s(&idx), "--pipeline", s(&pipeline), "-q"]);
    assert!(out.status.success(), "after the writer left: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&base);
}

/// Hebrew and Arabic from a PDF (painted right to left) are found by words typed in reading
/// order, lexically and densely.
#[test]
fn right_to_left_pdf_is_searchable() {
    let base = tmp("rtl");
    let pipeline = fast_pipeline(&base);
    let idx = base.join("idx");
    let pdf = root().join("tests/fixtures/rtl/whales-he-ar.pdf");
    let out = metarag(&["ingest", s(&pdf), "--index", s(&idx), "--pipeline", s(&pipeline), "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (query, want) in [("הלווייתן הכחול", "היונק הגדול ביותר"), ("الحوت الأزرق", "أكبر حيوان")]
    {
        let out = metarag(&["search", "--index", s(&idx), query, "--mode", "bm25", "--json", "-k", "1"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let hits: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let text = hits[0]["text"].as_str().unwrap_or_default();
        assert!(text.contains(want), "{query:?}: top hit {text:?}");
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn reingest_is_idempotent_and_changes_replace_old_chunks() {
    let base = tmp("reingest");
    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 4);
    let idx = base.join("idx");
    let run = |extra: &[&str]| {
        let mut a = vec!["ingest", s(&corpus), "--index", s(&idx), "--pipeline", s(&pipeline), "-q", "--json"];
        a.extend_from_slice(extra);
        let out = metarag(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json report")
    };
    let first = run(&[]);
    assert_eq!(first["report"]["ingested"], 4);
    let before = dump(&idx);

    let second = run(&[]);
    assert_eq!(second["report"]["ingested"], 0);
    assert_eq!(second["report"]["unchanged"], 4);
    assert_eq!(dump(&idx), before, "re-ingesting unchanged files changed the index");

    // shrink one file: its old chunks must all go, the others stay untouched
    let f = corpus.join("part-01.txt");
    std::fs::write(&f, "A short replacement. It has two sentences.").expect("write");
    let third = run(&[]);
    assert_eq!(third["report"]["ingested"], 1);
    let after = dump(&idx);
    let doc = metarag_index::document_id(&f);
    assert_eq!(after.0[&doc].1, 1);
    assert_eq!(after.1.iter().filter(|r| r.doc == doc).count(), 1);
    assert_eq!(after.1.len(), before.1.len() - before.0[&doc].1 as usize + 1);

    // a deleted file stays until --prune
    std::fs::remove_file(corpus.join("part-02.txt")).expect("rm");
    run(&[]);
    assert_eq!(dump(&idx).0.len(), 4);
    let pruned = run(&["--prune"]);
    assert_eq!(pruned["report"]["pruned"], 1);
    assert_eq!(dump(&idx).0.len(), 3);

    // an index refuses a pipeline with another embedder, naming both
    let other = base.join("other.toml");
    std::fs::write(&other, "[chunker]\nmethod = \"sentence\"\n[embedder]\nmodel = \"bge-small\"\ndims = 768\n")
        .expect("write");
    let out = metarag(&["ingest", s(&corpus), "--index", s(&idx), "--pipeline", s(&other), "-q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("all-minilm-l6-v2-int8") && err.contains("768"), "{err}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn bad_files_are_reported_and_the_rest_is_ingested() {
    let base = tmp("bad");
    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 3);
    for f in ["truncated.pdf", "empty.txt", "latin1.txt"] {
        std::fs::copy(root().join("tests/fixtures/bad").join(f), corpus.join(f)).expect("copy");
    }
    std::fs::write(corpus.join("blob"), [0u8, 159, 146, 150, 0, 1, 2, 3, 255, 0]).expect("write"); // binary, no extension
    let idx = base.join("idx");
    let out = metarag(&["ingest", s(&corpus), "--index", s(&idx), "--pipeline", s(&pipeline), "-q", "--verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for f in ["truncated.pdf", "empty.txt", "latin1.txt"] {
        assert_eq!(err.lines().filter(|l| l.starts_with("error: ") && l.contains(f)).count(), 1, "{f}: {err}");
    }
    assert!(err.contains("skipped 1 binary files"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (docs, recs, _) = dump(&idx);
    assert_eq!(docs.len(), 3, "the three good files are in the index");
    assert!(recs.iter().all(|r| r.path.contains("part-")));
    // the failed files are retried (and fail again) on the next run; the good ones are skipped
    let out = metarag(&["ingest", s(&corpus), "--index", s(&idx), "--pipeline", s(&pipeline), "-q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("3 unchanged, 3 failed"), "{err}");
    // not an index: a clear error
    let out = metarag(&["search", "--index", s(&corpus), "x", "--mode", "bm25"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a metarag index"), "{err}");
    let _ = std::fs::remove_dir_all(&base);
}

/// A user dataset under `base/data`: the Washington 1790 address and two questions on it.
fn washington_dataset(base: &Path) {
    let corpus = base.join("data/corpus");
    std::fs::create_dir_all(&corpus).expect("mkdir");
    let text = std::fs::read_to_string(root().join("examples/corpus/washington-1790.txt")).expect("read");
    std::fs::write(corpus.join("washington.txt"), &text).expect("write");
    let span = |answer: &str| {
        let start = text.find(answer).expect("answer in text");
        serde_json::json!({"text": answer, "start": start, "end": start + answer.len()})
    };
    let questions = [
        serde_json::json!({"id": "q1", "question": "How large was the loan completed in Holland?", "doc": "washington.txt", "answers": [span("3,000,000 florins")]}),
        serde_json::json!({"id": "q2", "question": "Which district is to become a distinct member of the Union?", "doc": "washington.txt", "answers": [span("Kentucky")]}),
    ];
    let lines: Vec<String> = questions.iter().map(|q| q.to_string()).collect();
    std::fs::write(base.join("data/questions.jsonl"), lines.join("\n")).expect("write");
}

fn read_report(out_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).expect("report.json")).expect("json")
}

#[test]
fn bench_reports_retrieval_metrics_on_a_user_dataset() {
    let base = tmp("bench");
    washington_dataset(&base);
    let out_dir = base.join("out");
    let out =
        metarag(&["bench", "--dataset", s(&base.join("data")), "--chunkers", "sentence", "--out", s(&out_dir), "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = read_report(&out_dir);
    assert_eq!(report["questions"], 2);
    let modes = report["runs"][0]["modes"].as_array().expect("modes");
    assert_eq!(modes.len(), 3);
    for m in modes {
        let recall: Vec<f64> =
            m["metrics"]["recall"].as_array().expect("recall").iter().filter_map(|v| v.as_f64()).collect();
        assert_eq!(recall.len(), 10);
        assert!(recall.windows(2).all(|w| w[0] <= w[1]) && recall[9] <= 1.0);
        assert_eq!(recall[9], 1.0, "one document of ~20 chunks: both answers are in the top 10 ({m})");
    }
    assert!(std::fs::read_to_string(out_dir.join("report.md")).expect("report.md").contains("| sentence |"));
    for m in modes {
        let ndcg = m["metrics"]["ndcg10"].as_f64().expect("nDCG@10");
        assert!((0.0..=1.0).contains(&ndcg) && ndcg >= m["metrics"]["mrr10"].as_f64().expect("mrr") - 1e-12, "{m}");
    }
    // Time and peak memory per stage; the plots of this run.
    let stages = report["stages"].as_array().expect("stages");
    assert!(stages.iter().any(|st| st["stage"] == "index sentence"), "{stages:?}");
    assert!(stages.iter().all(|st| st["seconds"].as_f64().is_some_and(|x| x >= 0.0)));
    assert!(stages.iter().all(|st| st["peak_rss_mib"].as_f64().is_some_and(|m| m > 1.0)), "{stages:?}");
    for plot in ["chunk_lengths.svg", "recall_at_k.svg", "stage_times.svg"] {
        let svg = std::fs::read_to_string(out_dir.join(plot)).expect(plot);
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{plot}");
    }
    assert!(!out_dir.join("ppl_curve.svg").exists(), "no PPL pipeline in this run");
    // A rerun reuses the index and the question vectors and gives the same numbers.
    let again =
        metarag(&["bench", "--dataset", s(&base.join("data")), "--chunkers", "sentence", "--out", s(&out_dir), "-q"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let second = read_report(&out_dir);
    let strip = |v: &serde_json::Value| {
        v["runs"][0]["modes"].as_array().expect("modes").iter().map(|m| m["metrics"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(strip(&second), strip(&report));
    assert_eq!(second["runs"][0]["chunks"], report["runs"][0]["chunks"]);
    // The same dataset by another path (as when the models directory is found from another
    // working directory): its documents replace the old ones in the index, never join them.
    let other = base.join("data").join("..").join("data");
    let third = metarag(&["bench", "--dataset", s(&other), "--chunkers", "sentence", "--out", s(&out_dir), "-q"]);
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    let third = read_report(&out_dir);
    assert_eq!(third["runs"][0]["chunks"], report["runs"][0]["chunks"], "the index holds the corpus once");
    assert_eq!(strip(&third), strip(&report));
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn bench_answers_are_cached_and_an_interrupted_run_resumes() {
    let base = tmp("bench-answers");
    washington_dataset(&base);
    let out_dir = base.join("out");
    let data = base.join("data");
    let bench_with = |seed: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--dataset",
            s(&data),
            "--chunkers",
            "sentence",
            "--retrieval",
            "hybrid",
            "--generate",
            "--samples",
            "2",
            "--infill",
            "extractive",
            "--aggregate",
            "rpc,vote",
            "--seed",
            seed,
            "--out",
            s(&out_dir),
            "-q",
        ];
        args.extend_from_slice(extra);
        let out = metarag(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        read_report(&out_dir)["answers"].clone()
    };
    let bench = |seed: &str| bench_with(seed, &[]);
    let caches = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&out_dir)
            .expect("out")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("answer-cache-")))
            .collect();
        v.sort();
        v
    };
    let first = bench("0");
    assert_eq!(first["cached"], 0, "{first}");
    let cache = caches();
    assert_eq!(cache.len(), 1, "{cache:?}");
    let lines = std::fs::read_to_string(&cache[0]).expect("cache");
    assert_eq!(lines.lines().count(), 2, "one line per question × infill");
    // Everything reused: same candidates, same numbers.
    let again = bench("0");
    assert_eq!(again["cached"], 2, "{again}");
    assert_eq!(again["runs"], first["runs"]);
    // Killed while writing the second question: its half line is decoded again, the first reused.
    let kept = lines.lines().next().expect("line");
    let cut = &lines.lines().nth(1).expect("line")[..40];
    std::fs::write(&cache[0], format!("{kept}\n{cut}")).expect("write");
    let resumed = bench("0");
    assert_eq!(resumed["cached"], 1, "{resumed}");
    assert_eq!(resumed["runs"], first["runs"], "a redecode with the same seed gives the same candidates");
    let repaired = std::fs::read_to_string(&cache[0]).expect("cache");
    let parsed = repaired.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()).count();
    assert_eq!(parsed, 2, "{repaired}");
    // Another seed is another configuration: another cache, nothing reused.
    let other = bench("1");
    assert_eq!(other["cached"], 0, "{other}");
    assert_eq!(caches().len(), 2);
    // The gold passage as the only context: another configuration, every context holds the answer.
    let gold = bench_with("0", &["--answer-context", "gold"]);
    assert_eq!((gold["cached"].as_u64(), gold["context"].as_str()), (Some(0), Some("gold")), "{gold}");
    assert_eq!(gold["context_has_answer"], 1.0, "{gold}");
    assert_eq!(caches().len(), 3);
    let log = std::fs::read_to_string(out_dir.join("answers.jsonl")).expect("answers.jsonl");
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert_eq!(v["context"], serde_json::json!(["washington.txt#gold"]), "{v}");
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn bench_reads_squad_json() {
    let base = tmp("bench-squad");
    std::fs::create_dir_all(&base).expect("mkdir");
    let text = std::fs::read_to_string(root().join("examples/corpus/washington-1790.txt")).expect("read");
    let paragraphs: Vec<&str> = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).collect();
    let (first, second) = paragraphs.split_at(paragraphs.len() / 2);
    let para = |context: String, q: &str, answer: &str, id: &str| {
        let start = context.chars().count() - context[context.find(answer).expect("answer")..].chars().count();
        serde_json::json!({"context": context, "qas": [{"id": id, "question": q, "answers": [{"text": answer, "answer_start": start}]}]})
    };
    let a = first.join(" ");
    let b = second.join(" ");
    let loan = if a.contains("3,000,000 florins") { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
    let json = serde_json::json!({"version": "1.1", "data": [
        {"title": "Washington_(1790)", "paragraphs": [para(loan.0, "How large was the loan completed in Holland?", "3,000,000 florins", "q1")]},
        {"title": "Other half", "paragraphs": [{"context": loan.1, "qas": [{"id": "q2", "question": "?", "answers": [], "is_impossible": true}]}]}
    ]});
    let file = base.join("mine.json");
    std::fs::write(&file, json.to_string()).expect("write");
    let out_dir = base.join("out");
    let out = metarag(&[
        "bench",
        "--dataset",
        s(&file),
        "--chunkers",
        "sentence",
        "--retrieval",
        "bm25",
        "--out",
        s(&out_dir),
        "-q",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 articles, 1 questions (1 unanswerable skipped"), "{err}");
    let data = out_dir.join("dataset-mine");
    assert!(data.join("corpus/000-washington-1790.txt").is_file() && data.join("corpus/001-other-half.txt").is_file());
    let report = read_report(&out_dir);
    assert_eq!(report["questions"], 1);
    assert_eq!(report["runs"][0]["modes"][0]["metrics"]["recall"][9], 1.0, "{report}");
    let _ = std::fs::remove_dir_all(&base);
}

/// Runs metarag with its stdout closed by the reader before anything is written (as
/// `metarag … | head -0` would): a quiet exit 0, no panic text.
fn assert_quiet_on_closed_pipe(args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metarag"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run metarag");
    drop(child.stdout.take()); // the reader goes away before the first line
    let out = child.wait_with_output().expect("wait for metarag");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    assert!(out.status.success(), "{args:?} exited with {:?}: {err}", out.status);
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let idx = s(example_index());
    assert_quiet_on_closed_pipe(&["search", "Kentucky", "--index", idx, "--json"]);
    assert_quiet_on_closed_pipe(&["search", "Kentucky", "--index", idx, "--mode", "bm25"]);
    assert_quiet_on_closed_pipe(&["chunk", "examples/corpus", "--method", "sentence", "-q"]);
}

/// Records and dense vectors of the collection an index writes to, by point id.
fn collection_of(dir: &Path) -> (Vec<ChunkRecord>, BTreeMap<u64, Vec<f32>>) {
    let index = Index::open(dir).expect("open");
    let ids = index.vectors().ids().expect("ids");
    let mut recs = index.vectors().get(&ids).expect("get");
    recs.sort_by_key(|r| r.id);
    (recs, dense_of(dir))
}

/// Against a live Qdrant server (`METARAG_QDRANT_URL`, e.g. `http://127.0.0.1:6334`; skipped
/// without it): the example corpus ingested with the default pipeline answers the known
/// questions in every mode, and two ingest processes running at once on the halves of a
/// corpus (`--shard 1/2`, `--shard 2/2`, their own index directories, one collection) leave
/// exactly the chunks and vectors of a single ingest.
#[test]
fn a_qdrant_server_takes_an_ingest_searches_and_two_shard_writers() {
    let Ok(url) = std::env::var("METARAG_QDRANT_URL") else {
        eprintln!("METARAG_QDRANT_URL not set: the live-server ingest and shards are not exercised");
        return;
    };
    let base = tmp("server");
    let pid = std::process::id();
    let server = |coll: &str| vec!["--qdrant-url".to_string(), url.clone(), "--collection".into(), coll.into()];

    let idx = base.join("examples");
    let mut args: Vec<String> =
        ["ingest", "examples/corpus", "--index", s(&idx), "--verify", "-q"].map(String::from).into();
    args.extend(server(&format!("metarag_it_examples_{pid}")));
    let out = metarag(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("ingested 4 of 4 files"), "{err}");
    for mode in ["bm25", "dense", "hybrid"] {
        let mut misses = Vec::new();
        for (q, file, answer) in KNOWN {
            let out = metarag(&["search", "--index", s(&idx), q, "--mode", mode, "-k", "5", "--json"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
            if !hits.iter().any(|h| {
                h["path"].as_str().is_some_and(|p| p.ends_with(file))
                    && collapse(h["text"].as_str().unwrap_or("")).contains(answer)
            }) {
                misses.push(q);
            }
        }
        assert!(misses.is_empty(), "server, {mode}: answer not in the top 5 for {misses:?}");
    }

    let pipeline = fast_pipeline(&base);
    let corpus = small_corpus(&base, 12);
    let ingest = |idx: &Path, coll: &str, shard: Option<&str>| {
        let mut a: Vec<String> = ["ingest", s(&corpus), "--index", s(idx), "--pipeline", s(&pipeline), "-q", "--json"]
            .map(String::from)
            .into();
        a.extend(server(coll));
        if let Some(part) = shard {
            a.extend(["--shard".to_string(), part.to_string()]);
        }
        Command::new(env!("CARGO_BIN_EXE_metarag"))
            .args(&a)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run metarag")
    };
    let finish = |child: std::process::Child| {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json report")
    };
    let (one, half_a, half_b) = (base.join("one"), base.join("half-a"), base.join("half-b"));
    finish(ingest(&one, &format!("metarag_it_one_{pid}"), None));
    let together = format!("metarag_it_halves_{pid}");
    let (a, b) = (ingest(&half_a, &together, Some("1/2")), ingest(&half_b, &together, Some("2/2")));
    let (a, b) = (finish(a), finish(b));
    let n = |r: &serde_json::Value| r["report"]["ingested"].as_u64().expect("ingested");
    assert!(n(&a) > 0 && n(&b) > 0 && n(&a) + n(&b) == 12, "parts of 12 files: {} + {}", n(&a), n(&b));

    let (want_recs, want_vecs) = collection_of(&one);
    let (got_recs, _) = collection_of(&half_a);
    assert_eq!(got_recs, want_recs, "two writers' collection differs from one ingest's");
    assert_same_vectors(&half_a, &want_vecs, "two writers");
    let docs = |d: &Path| {
        let mut v: Vec<String> = Index::open(d).expect("open").manifest().documents.keys().cloned().collect();
        v.sort();
        v
    };
    let mut halves = docs(&half_a);
    halves.extend(docs(&half_b));
    halves.sort();
    assert_eq!(halves, docs(&one), "the parts' manifests do not add up to one ingest's");
    let _ = std::fs::remove_dir_all(&base);
}
