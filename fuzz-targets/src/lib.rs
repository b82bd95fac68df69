//! The bodies of weft's fuzz targets, one function per target, each taking
//! the fuzzer's bytes and calling the real parser of the crate it tests.
//!
//! Two callers share them: the cargo-fuzz targets in `fuzz/fuzz_targets/`
//! (nightly, libFuzzer; see `fuzz/README.md`) and `tests/corpus.rs`, which
//! replays every committed corpus file through the same function on stable,
//! so a parser regression fails `cargo test` where nightly is absent.
//!
//! Each function panics when an invariant breaks (a round trip that does
//! not come back equal, a verdict that changes when bytes are added): a
//! panic is what libFuzzer reports as a crash, and what fails the test.
#![forbid(unsafe_code)]

pub mod control;
pub mod detect;
pub mod flags;
pub mod headers;
pub mod input;
pub mod routes;

/// A target's body: the fuzzer's bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name: the name of its `fuzz/fuzz_targets/<name>.rs`
/// and of its corpus directory `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("detect", detect::detect),
    ("client_hello", detect::client_hello),
    ("grpc_timeout", headers::grpc_timeout),
    ("trace_context", headers::trace_context),
    ("flags", flags::flags),
    ("route", routes::route),
    ("inbound_policy", routes::inbound_policy),
    ("manifest", control::manifest),
    ("admission_review", control::admission_review),
];
