//! The fuzz targets' committed inputs (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`)
//! replayed through the targets' own checks as ordinary tests: a crash fuzzing found stays
//! fixed without a fuzzer on the machine. `fuzz/smoke.sh` runs the real fuzzer.

#[path = "../fuzz/src/lib.rs"]
mod checks;

#[test]
fn fuzz_seeds_and_regressions_pass_their_checks() {
    let fuzz = crate::root().join("fuzz");
    let targets: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("entry").path().file_stem().expect("name").to_string_lossy().into_owned())
        .collect();
    assert!(targets.len() >= 6, "{targets:?}");
    let mut inputs = 0;
    for target in &targets {
        let check = checks::check_of(target).unwrap_or_else(|| panic!("no check for fuzz target {target}"));
        let mut seeds = 0;
        for kind in ["seeds", "regressions"] {
            let Ok(files) = std::fs::read_dir(fuzz.join(kind).join(target)) else { continue };
            for f in files {
                let path = f.expect("entry").path();
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if std::panic::catch_unwind(|| check(&bytes)).is_err() {
                    panic!("{}: the {target} check fails on this input", path.display());
                }
                seeds += usize::from(kind == "seeds");
                inputs += 1;
            }
        }
        assert!(seeds > 0, "fuzz target {target} has no seed in fuzz/seeds/{target}");
    }
    eprintln!("{inputs} fuzz inputs of {} targets pass", targets.len());
}
