//! Tokenizers (`tokenizer.json`) for the language models.
//!
//! `tokenizers` 0.22 panics (`expect("Helper")` in its decoder deserializer) on a
//! `"decoder"` that is not valid JSON, rather than returning an error: the bytes are
//! checked to be JSON before they reach it.

use std::path::Path;

pub use tokenizers::Tokenizer;

use crate::{ModelError, Result};

/// A tokenizer from `tokenizer.json` bytes; the error says what is wrong with them.
pub fn tokenizer_from_bytes(bytes: &[u8]) -> std::result::Result<Tokenizer, String> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .map_err(|e| format!("not valid JSON: {e}"))?;
    Tokenizer::from_bytes(bytes).map_err(|e| e.to_string())
}

/// Reads a `tokenizer.json`; errors name the file.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path)
        .map_err(|e| ModelError::Input(format!("{}: cannot read: {e}", path.display())))?;
    tokenizer_from_bytes(&bytes).map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))
}
