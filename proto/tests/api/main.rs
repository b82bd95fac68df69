//! Tests of the weft control-plane API as other crates see it: its wire
//! format (field numbers pinned by exact bytes) and its documentation (the
//! reflection descriptor). The generated clients and servers are exercised
//! against the real servers, in weft-control's tests (`control/tests/`) and
//! the scenarios of `tests/`, not against fakes written here.
//!
//! One test binary with a module per concern, so the crate links once.

mod descriptor;
mod wire;
