//! The records of a run: its directory and every file name in it, the summary,
//! metrics tables, confusion matrices, plots and checkpoints.

pub mod checkpoint;
pub mod confusion;
pub mod log;
pub mod plot;
pub mod run_dir;
pub(crate) mod sink;
pub mod summary;
pub mod mlflow;
pub mod table;
pub mod tensorboard;

/// A TOML document's leaves under their dotted keys, in document order: tables and arrays
/// of tables are walked (`phases.1.optimizer.lr`), other values are leaves (`[1, 2]` is one).
/// What the report's config columns and the trackers' params are made of.
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
