//! Shared helpers for kiln's cross-crate and end-to-end tests.
