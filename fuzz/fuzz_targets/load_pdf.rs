//! The PDF loader (pdf-extract behind catch_unwind and a time limit) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metarag_fuzz::check_load("fuzz.pdf", data));
