//! Compiles the vendored ONNX schema (`proto/onnx.proto`, from the onnx 1.23.2 wheel) into Rust types
//! with `protox` (a pure-Rust .proto compiler, so no `protoc` is needed) and `prost-build`.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto compiles");
    prost_build::Config::new().compile_fds(descriptors).expect("prost-build generates the ONNX types");
}
