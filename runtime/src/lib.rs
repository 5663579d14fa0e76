//! kiln-runtime: executes kiln IR graphs (CPU reference executor) and runs the decoding loop.
//!
//! SKELETON: filled in by the runtime work.
