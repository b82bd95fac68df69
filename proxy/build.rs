//! Release builds of the `weft-proxy` binary for Linux with glibc pack
//! their relative relocations (`DT_RELR`, `-z pack-relative-relocs`): the
//! position-independent binary's 24,600 relocations were a 591 KB table
//! that the loader reads, and so keeps resident, in every proxy; packed,
//! 5 KB. Measured on an idle proxy (`/proc/PID/smaps`): its first segment
//! 1,144 -> 516 kB resident.
//!
//! Needs binutils 2.38 or lld to link and glibc 2.36 to run (Debian 12,
//! the images' distroless cc-debian12, Ubuntu 24.04). `WEFT_NO_RELR=1`
//! builds without it, for an older system.

fn main() {
    println!("cargo:rerun-if-env-changed=WEFT_NO_RELR");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    let opted_out = std::env::var_os("WEFT_NO_RELR").is_some_and(|v| v != "0");
    if release && linux_gnu && !opted_out {
        println!("cargo:rustc-link-arg-bin=weft-proxy=-Wl,-z,pack-relative-relocs");
    }
}
