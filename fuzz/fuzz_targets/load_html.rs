//! The HTML loader (UTF-8 check, tl, text extraction) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metarag_fuzz::check_load("fuzz.html", data));
