//! The configuration layer: what a user writes and what runner makes of it,
//! with no tensors. The backbone catalogue (names, layer counts, default
//! weights), the spec types with their validation and located errors, and the
//! expansion of a spec file into runs (defaults, grid, search trials, overrides).

pub(crate) mod catalog;
pub mod experiment;
pub mod search;
pub mod tpe;
pub mod spec;

/// A TOML document's leaves under their dotted keys, in document order: tables and arrays
/// of tables are walked (`phases.1.optimizer.lr`), other values are leaves (`[1, 2]` is one).
/// What the report's config columns, the trackers' params and the grid's key sets are made of.
pub(crate) fn dotted_leaves(value: &toml::Value) -> Vec<(String, &toml::Value)> {
    fn walk<'a>(prefix: &str, value: &'a toml::Value, out: &mut Vec<(String, &'a toml::Value)>) {
        let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        match value {
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| walk(&key(k), v, out)),
            toml::Value::Array(a) if a.iter().any(|v| v.is_table()) => {
                a.iter().enumerate().for_each(|(i, v)| walk(&key(&i.to_string()), v, out))
            }
            v => out.push((prefix.to_string(), v)),
        }
    }
    let mut out = vec![];
    walk("", value, &mut out);
    out
}
