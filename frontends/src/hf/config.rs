//! Typed reads of a Hugging Face `config.json` held as JSON, with errors that name the field and the file.
//!
//! Configs of one architecture differ between transformers versions (v4 `rope_theta`/`rope_scaling`,
//! v5 `rope_parameters`), and GGUF-derived configs carry only what GGUF knows, so fields are read one
//! by one: required ones are errors when absent, the rest take transformers' defaults.

use serde_json::Value;

use crate::FrontendError;

/// A config object and the name of the file it came from.
pub struct Config<'a> {
    pub value: &'a Value,
    pub file: &'a str,
}

impl<'a> Config<'a> {
    pub fn new(value: &'a Value, file: &'a str) -> Result<Config<'a>, FrontendError> {
        if !value.is_object() {
            return Err(FrontendError::Config { file: file.into(), message: "the config is not a JSON object".into() });
        }
        Ok(Config { value, file })
    }

    pub fn error(&self, message: String) -> FrontendError {
        FrontendError::Config { file: self.file.into(), message }
    }

    /// The field, treating JSON `null` as absent (transformers writes unset fields as null).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, want: &str, v: &Value) -> FrontendError {
        self.error(format!("field `{key}` must be {want}, but it is {v}"))
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, FrontendError> {
        self.get(key).map(|v| v.as_u64().ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))).transpose()
    }

    pub fn u64(&self, key: &str) -> Result<u64, FrontendError> {
        self.opt_u64(key)?.ok_or_else(|| self.error(format!("missing field `{key}`")))
    }

    /// The first of `keys` that is present (architectures name some fields differently).
    pub fn u64_any(&self, keys: &[&str]) -> Result<u64, FrontendError> {
        for k in keys {
            if let Some(v) = self.opt_u64(k)? {
                return Ok(v);
            }
        }
        let also = if keys.len() > 1 { format!(" (or `{}`)", keys[1..].join("`, `")) } else { String::new() };
        Err(self.error(format!("missing field `{}`{also}", keys[0])))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, FrontendError> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.wrong_type(key, "a number", v))).transpose()
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, FrontendError> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, FrontendError> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.wrong_type(key, "true or false", v))).transpose()
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, FrontendError> {
        Ok(self.opt_bool(key)?.unwrap_or(default))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, FrontendError> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, "a string", v))).transpose()
    }

    /// A nested object (`rope_parameters`, `rope_scaling`) as a config of the same file.
    pub fn opt_object(&self, key: &str) -> Result<Option<Config<'a>>, FrontendError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.is_object() => Ok(Some(Config { value: v, file: self.file })),
            Some(v) => Err(self.wrong_type(key, "an object", v)),
        }
    }

    /// Token ids given as one integer or a list of integers (`eos_token_id`).
    pub fn token_ids(&self, key: &str) -> Result<Vec<u32>, FrontendError> {
        let one = |v: &Value| {
            v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| self.wrong_type(key, "a token id", v))
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}
