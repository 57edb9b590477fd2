//! `metarag bench`: retrieval quality of chunkers × retrieval modes on a QA dataset (the run
//! itself is `metarag_engine::bench`).

use std::process::ExitCode;

pub use metarag_engine::bench::BenchOptions as BenchArgs;

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (_, md) = metarag_engine::bench::run(args, &crate::setup::checkout())?;
    {
        use std::io::Write as _;
        std::io::stdout().lock().write_all(md.as_bytes())?;
    }
    eprintln!("wrote {} and report.md", args.out.join("report.json").display());
    Ok(ExitCode::SUCCESS)
}
