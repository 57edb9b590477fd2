//! The `metarag` command line; everything is in the library (`crates/cli/lib.rs`).

fn main() -> std::process::ExitCode {
    metarag::cli_main()
}
