#![no_main]
//! See `weft_fuzz_targets::routes::route`: the body is shared with the
//! stable corpus replay (`fuzz-targets/tests/corpus.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz_targets::routes::route(data));
