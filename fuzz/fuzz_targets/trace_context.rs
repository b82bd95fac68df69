#![no_main]
//! See `weft_fuzz_targets::headers::trace_context`: the body is shared with the
//! stable corpus replay (`fuzz-targets/tests/corpus.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz_targets::headers::trace_context(data));
