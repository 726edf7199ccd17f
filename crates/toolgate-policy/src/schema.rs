//! The `schema` extension: a JSON Schema the call's `arguments` must satisfy, compiled once
//! at load.

use jsonschema::{PatternOptions, Retrieve, Uri, Validator};
use serde_json::{Map, Value};

use crate::error::{Errors, Pointer};

/// Refuses every external reference. A policy is loaded on the request path of a security
/// gateway: fetching `$ref`s over the network or from disk at load time would make loading
/// depend on (and leak to) whatever the URI names. Installing it explicitly keeps that true even
/// if another crate in the build turns on jsonschema's resolver features.
struct NoExternalRefs;

impl Retrieve for NoExternalRefs {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external reference \"{uri}\" is not allowed; inline it in the schema").into())
    }
}

/// Longest validator message kept in a denial, so that a huge offending argument echoed by
/// the validator cannot bloat the answer and the audit log.
const MAX_MESSAGE_CHARS: usize = 300;

/// A compiled argument schema.
#[derive(Debug)]
pub(crate) struct Schema(Validator);

impl Schema {
    /// Compiles `schema`; an invalid schema is reported at its JSON Pointer inside the document.
    pub(crate) fn compile(schema: &Value, at: &Pointer, errs: &mut Errors) -> Option<Schema> {
        let built = jsonschema::options()
            .with_retriever(NoExternalRefs)
            // The linear-time engine: a schema `pattern` must not be a backtracking hazard.
            .with_pattern_options(PatternOptions::regex())
            .build(schema);
        match built {
            Ok(v) => Some(Schema(v)),
            Err(e) => {
                let at = at.join_pointer(e.instance_path().as_str());
                errs.push(
                    &at,
                    format!("invalid JSON Schema: {}", one_line(&e.to_string())),
                );
                None
            }
        }
    }

    /// `None` when `arguments` satisfy the schema, else "<validator message> at <pointer>".
    /// Absent arguments (`Null`) are checked as `{}`, which is what the upstream will see.
    pub(crate) fn violation(&self, arguments: &Value) -> Option<String> {
        let empty;
        let instance = if arguments.is_null() {
            empty = Value::Object(Map::new());
            &empty
        } else {
            arguments
        };
        let error = self.0.validate(instance).err()?;
        let pointer = error.instance_path().as_str();
        let pointer = if pointer.is_empty() { "/" } else { pointer };
        let mut message = one_line(&error.to_string());
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        Some(format!("{message} at {pointer}"))
    }
}

fn one_line(s: &str) -> String {
    if s.contains('\n') {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        s.to_owned()
    }
}
