//! Generates the gRPC code from `proto/trireme/v1/*.proto` with the protoc
//! shipped by `protoc-bin-vendored`, so a fresh machine needs no system protoc.

const PROTOS: &[&str] = &[
    "proto/trireme/v1/agent.proto",
    "proto/trireme/v1/operator.proto",
    "proto/trireme/v1/health.proto",
    "proto/trireme/v1/keys.proto",
    "proto/trireme/v1/enroll.proto",
    "proto/trireme/v1/tokens.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An explicit PROTOC wins (e.g. a distribution build); otherwise the vendored one.
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
