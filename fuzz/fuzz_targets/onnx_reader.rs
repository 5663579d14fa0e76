//! Fuzzes the ONNX reader: arbitrary bytes through protobuf decoding, tensor decoding, graph ordering
//! and the op importers. Any input must give a model or an error, never a panic.

#![no_main]

use kiln_frontends::onnx::{ImportOptions, import_bytes, read_tensor_proto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = import_bytes(data, None, "fuzz", &ImportOptions::default());
    let _ = read_tensor_proto(data);
});
