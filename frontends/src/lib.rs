//! kiln-frontends: importers from Hugging Face directories, GGUF files and ONNX graphs into kiln IR.
//!
//! The importers land with the model-import and ONNX issues; this crate exists now so the workspace
//! has its final shape and the dependency-direction test guards it from the start.
