//! A spec file's text, kept to point every error at the line and column of its key.

use super::suggest::quote_list;
use super::*;

/// A spec file's text, kept to point errors at lines.
#[derive(Debug, Clone)]
pub struct SpecSource {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    doc: toml_edit::Document<String>,
}

impl SpecSource {
    pub(crate) fn read(path: &Path) -> Result<SpecSource, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                "spec file not found".to_string()
            } else {
                format!("cannot read spec file: {e}")
            };
            SpecError::new(path, "", msg)
        })?;
        Self::new(path, text)
    }

    /// `path` only names the file in errors.
    pub(crate) fn new(path: &Path, text: String) -> Result<SpecSource, SpecError> {
        // Syntax first: toml reports the exact position.
        let doc = toml_edit::Document::parse(text.clone()).map_err(|e| {
            let mut err = SpecError::new(path, "", format!("invalid TOML: {}", e.message().trim()));
            err.line_col = e.span().map(|s| line_col(&text, s.start));
            err
        })?;
        Ok(SpecSource { path: path.to_path_buf(), text, doc })
    }

    pub(crate) fn table(&self) -> Result<toml::Table, SpecError> {
        toml::from_str(&self.text).map_err(|e| SpecError::new(&self.path, "", format!("invalid TOML: {}", e.message())))
    }

    /// An error about the key at `at` (path segments), located in the file when it is written there.
    pub(crate) fn error(&self, at: &[impl AsRef<str>], message: String) -> SpecError {
        let segments: Vec<&str> = at.iter().map(|s| s.as_ref()).collect();
        let key = segments
            .iter()
            .map(|s| if s.contains('.') { format!("\"{s}\"") } else { s.to_string() })
            .collect::<Vec<_>>()
            .join(".");
        let mut err = SpecError::new(&self.path, key, message);
        err.line_col = locate(&self.doc, &self.text, &segments);
        err
    }

    /// Turns a figment extraction error into a located spec error. `grid` maps
    /// dotted keys set by the grid to where their axis is written.
    pub(crate) fn figment_error(&self, err: figment::Error, grid: &[(String, Vec<String>)]) -> SpecError {
        use figment::error::Kind;
        let mut key_path = err.path.clone();
        let message = match &err.kind {
            Kind::UnknownField(field, expected) => {
                if key_path.last() != Some(field) {
                    key_path.push(field.clone());
                }
                let mut msg = format!("unknown key `{field}`");
                if let Some(best) = suggest(field, expected) {
                    msg.push_str(&format!(", did you mean `{best}`?"));
                } else if !expected.is_empty() {
                    msg.push_str(&format!(", expected one of {}", quote_list(expected)));
                }
                msg
            }
            Kind::MissingField(field) => {
                if key_path.last().map(String::as_str) == Some(field.as_ref()) {
                    key_path.pop();
                }
                let parent = key_path.join(".");
                key_path.push(field.to_string());
                if parent.is_empty() {
                    format!("missing required key `{field}`")
                } else {
                    format!("missing required key `{field}` in `{parent}`")
                }
            }
            Kind::UnknownVariant(found, expected) => match suggest(found, expected) {
                Some(best) => format!("unknown value {found:?}, did you mean {best:?}?"),
                None => format!("unknown value {found:?}, expected one of {}", quote_list(expected)),
            },
            Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
            Kind::InvalidValue(actual, expected) => format!("expected {expected}, found {actual}"),
            Kind::InvalidLength(len, expected) => format!("expected {expected}, found {len} elements"),
            other => other.to_string(),
        };
        let key = key_path.join(".");
        let layer = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
        if let Some((_, location)) = grid.iter().find(|(k, _)| *k == key || key.starts_with(&format!("{k}."))) {
            let mut e = self.error(location, message);
            e.key = key;
            return e;
        }
        if layer.starts_with("--set") || layer.starts_with("environment") {
            let mut e = SpecError::new(&self.path, key, format!("{message} (from {layer})"));
            e.line_col = None;
            return e;
        }
        let segments: Vec<&str> = key_path.iter().map(String::as_str).collect();
        let mut e = self.error(&segments, message);
        e.key = key;
        e
    }
}

/// Line and column (1-based) of the dotted `key` in the TOML document, or of
/// its nearest ancestor that is written there.
fn locate(doc: &toml_edit::Document<String>, text: &str, key: &[&str]) -> Option<(usize, usize)> {
    use toml_edit::{Item, Value};
    enum Node<'a> {
        Item(&'a Item),
        Table(&'a toml_edit::Table),
        Value(&'a Value),
    }
    let mut best: Option<std::ops::Range<usize>> = None;
    let mut node = Node::Item(doc.as_item());
    for &part in key {
        let index = part.parse::<usize>().ok();
        let step = match (node, index) {
            (Node::Item(Item::ArrayOfTables(a)), Some(i)) => a.get(i).map(|t| (t.span(), Node::Table(t))),
            (Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)), Some(i)) => {
                a.get(i).map(|v| (v.span(), Node::Value(v)))
            }
            (Node::Item(item), _) => {
                item.as_table_like().and_then(|t| t.get_key_value(part)).map(|(k, v)| (k.span(), Node::Item(v)))
            }
            (Node::Table(t), _) => t.get_key_value(part).map(|(k, v)| (k.span(), Node::Item(v))),
            (Node::Value(Value::InlineTable(t)), _) => t.get_key_value(part).map(|(k, v)| (k.span(), Node::Item(v))),
            (Node::Value(_), _) => None,
        };
        let Some((span, next)) = step else { break };
        best = span.or(best);
        node = next;
    }
    best.map(|r| line_col(text, r.start))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
