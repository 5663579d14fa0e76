//! Fuzzes the `.kiln` loader: any bytes must load or give an error, never panic or read out of bounds.
//!
//! Random bytes almost never carry a matching integrity hash, which the loader checks before it parses
//! the records, the weights, the kernels and the IR. So when the first input byte is odd, the target
//! re-signs the rest (recomputes the hash over it, as an attacker could) before loading, and libFuzzer
//! explores everything behind the hash too. Seed it with a real artifact (see README.md).

#![no_main]

use kiln_runtime::artifact::{MAX_HEADER_BYTES, integrity_digits, integrity_hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        resign(&mut bytes);
    }
    if let Ok(artifact) = kiln_runtime::Artifact::from_bytes(bytes) {
        // A loaded artifact must also build its executor and tokenizer without panicking.
        let _ = kiln_runtime::Model::on_cpu(artifact);
    }
});

/// Replaces the integrity hash of `file` with the correct one, when the header has one where the
/// loader looks for it.
fn resign(file: &mut [u8]) {
    let Some(len) = file.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) else { return };
    if len > MAX_HEADER_BYTES || 8 + len as usize > file.len() {
        return;
    }
    let Some(digits) = integrity_digits(file, 8..8 + len as usize) else { return };
    let hash = integrity_hash(file, digits.clone());
    file[digits].copy_from_slice(&hash.as_bytes()["blake3:".len()..]);
}
