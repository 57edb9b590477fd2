//! A file without extension: sniffed as PDF, HTML, binary or text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metarag_fuzz::check_load("fuzz-input", data));
