//! The pipeline TOML parser: errors name the file, parsed pipelines round-trip.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metarag_fuzz::check_pipeline_toml(data));
