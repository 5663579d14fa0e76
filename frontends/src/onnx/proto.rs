//! The ONNX protobuf messages, generated at build time from the vendored `proto/onnx.proto` (onnx
//! 1.23.2, IR version 14), and the decoding of a model file into them.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
