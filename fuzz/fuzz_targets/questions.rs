//! The dataset readers: questions.jsonl lines and SQuAD JSON (see `check_questions`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metarag_fuzz::check_questions(data));
