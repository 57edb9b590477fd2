//! The sentence splitter and the merger: spans tile any text (see `check_split_merge`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metarag_fuzz::check_split_merge(data));
