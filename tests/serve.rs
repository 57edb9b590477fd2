//! `metarag serve` over real HTTP: `tests/http/run.sh` runs pytest (a real client against a
//! real server process on loopback: every endpoint, bad JSON, oversized bodies, the bearer
//! token, concurrent searches, SIGTERM) and schemathesis against `/openapi.json`.

use std::process::Command;

use crate::root;

#[test]
fn http_tests_and_schemathesis() {
    // A private copy: the server holds its embedded vector store while it runs.
    let dir = std::env::temp_dir().join(format!("metarag-it-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    crate::index::copy_dir(crate::index::example_index(), &dir);
    let out = Command::new("bash")
        .arg(root().join("tests/http/run.sh"))
        .arg(env!("CARGO_BIN_EXE_metarag"))
        .arg(&dir)
        .current_dir(root())
        .output()
        .expect("run tests/http/run.sh");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: String = stdout.chars().rev().take(8000).collect::<Vec<_>>().into_iter().rev().collect();
    assert!(out.status.success(), "tests/http/run.sh failed:\n{tail}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
}
