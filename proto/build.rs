//! Compiles the control-plane API in `proto/` into Rust.
//!
//! The `.proto` files are parsed by protox (pure Rust: no system `protoc` is
//! needed or used) into a `FileDescriptorSet`, which is
//! - written, encoded and with its comments, to `$OUT_DIR/weft_descriptor.bin`
//!   for gRPC reflection (`weft_proto::FILE_DESCRIPTOR_SET`), and
//! - handed to tonic-prost-build, which writes one `<package>.rs` file per
//!   package (messages, clients and servers) to `$OUT_DIR`.

use std::{env, error::Error, fs, path::PathBuf};

/// The API's files, relative to the `proto/` include directory.
const PROTOS: &[&str] = &[
    "weft/discovery/v1/discovery.proto",
    "weft/identity/v1/identity.proto",
    "weft/policy/v1/policy.proto",
];

fn main() {
    if let Err(err) = run() {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let include = manifest_dir.join("proto");

    // A directory makes cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new([&include])?;
    // Comments become the generated code's doc comments and stay in the
    // reflection descriptor; imports (google/protobuf/*) make the descriptor
    // self-contained for reflection clients.
    compiler.include_source_info(true).include_imports(true);
    if let Err(err) = compiler.open_files(PROTOS) {
        // protox's `Debug` says where (`file:line:column`) and what is wrong.
        return Err(format!("cannot compile the API's .proto files: {err:?}").into());
    }

    fs::write(
        out_dir.join("weft_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
