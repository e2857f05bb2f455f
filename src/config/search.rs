//! `[search]`: random search over a space of dotted keys. Each trial is a normal run: its
//! sampled values are set on the spec as a grid point's are (after the grid, before the
//! environment's and `--set` overrides), so it has a content-addressed id, resumes, and
//! shows in `runner plan`; with a `[grid]`, every grid point gets the trials.
//!
//! ```toml
//! [search]
//! trials = 8
//! method = "random"
//! seed = 0
//!
//! [search.space]
//! "phases.0.optimizer.lr" = { log_uniform = [1e-4, 1e-2] }
//! "model.head.dropout" = { uniform = [0.0, 0.5] }
//! "data.batch_size" = { choice = [16, 32] }
//! "phases.1.freeze_up_to" = { int_uniform = [8, 14] }
//! ```
//!
//! Trial `t` draws from its own stream (ChaCha8 seeded with `seed`, stream `t`), key by key
//! in the order the space lists them: raising `trials` keeps the earlier trials as they
//! were, and a rerun plans the same trials. Floats are rounded to 4 significant digits, so
//! that plans and run names stay readable.
//!
//! `method = "halving"` trains the trials by successive halving (sweep/halving/); its
//! `sampler = "tpe"` proposes them by TPE as they start. `method = "tpe"` runs TPE's trials
//! one after another (config/tpe.rs, sweep/tpe.rs).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::spec::SpecSource;
use crate::error::SpecError;

/// The most trials one search may ask for.
pub(crate) const MAX_TRIALS: usize = 10_000;

/// What a search samples, parsed from `[search]`.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    pub trials: usize,
    pub seed: u64,
    pub space: Vec<Dimension>,
    /// `method = "halving"`: how the trials share the epochs.
    pub halving: Option<Halving>,
    /// `method = "tpe"`, or `sampler = "tpe"` with halving: trials proposed from the
    /// results of the trials before them.
    pub tpe: Option<super::tpe::Tpe>,
}

/// Asynchronous successive halving (ASHA) over epochs: every trial trains `min_epochs`
/// first; a trial moves on to `min_epochs x eta^k` epochs once it is in the best 1 / `eta`
/// of the trials that reached the rung below, by the monitored metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halving {
    pub min_epochs: usize,
    pub eta: usize,
}

/// One key of the space and how it is drawn.
#[derive(Debug, Clone)]
pub(crate) struct Dimension {
    pub key: Vec<String>,
    /// Where it is written: `["search", "space", key]`.
    pub location: Vec<String>,
    pub(crate) dist: Dist,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dist {
    LogUniform(f64, f64),
    Uniform(f64, f64),
    IntUniform(i64, i64),
    Choice(Vec<toml::Value>),
}

/// `x` rounded to 4 significant digits.
pub(crate) fn round4(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

impl Dimension {
    fn draw(&self, rng: &mut ChaCha8Rng) -> toml::Value {
        match &self.dist {
            Dist::LogUniform(lo, hi) => toml::Value::Float(round4(rng.random_range(lo.ln()..=hi.ln()).exp())),
            Dist::Uniform(lo, hi) => toml::Value::Float(round4(rng.random_range(*lo..=*hi))),
            Dist::IntUniform(lo, hi) => toml::Value::Integer(rng.random_range(*lo..=*hi)),
            Dist::Choice(values) => values[rng.random_range(0..values.len())].clone(),
        }
    }
}

impl Search {
    /// Trial `t`'s values, one per dimension, in the space's order.
    pub fn sample(&self, t: usize) -> Vec<toml::Value> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(t as u64);
        self.space.iter().map(|d| d.draw(&mut rng)).collect()
    }

    /// Drops the dimensions that an override pins (its value wins in every trial).
    pub(crate) fn pin(&mut self, pinned: &[Vec<String>]) {
        self.space.retain(|d| !pinned.contains(&d.key));
    }
}

/// Parses the `[search]` table of `source`.
pub(crate) fn parse(source: &SpecSource, value: &toml::Value) -> Result<Search, SpecError> {
    let at = |path: &[&str]| path.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let toml::Value::Table(table) = value else {
        return Err(source.error(&at(&["search"]), format!("expected a table, found {}", value.type_str())));
    };
    let mut search = Search { trials: 0, seed: 0, space: vec![], halving: None, tpe: None };
    let mut m = MethodKeys { method: "random", ..MethodKeys::default() };
    for (key, value) in table {
        match (key.as_str(), value) {
            ("trials", toml::Value::Integer(n)) if (1..=MAX_TRIALS as i64).contains(n) => search.trials = *n as usize,
            ("trials", other) => {
                return Err(source
                    .error(&at(&["search", "trials"]), format!("expected 1 to {MAX_TRIALS} trials, found {other}")));
            }
            ("seed", toml::Value::Integer(n)) if *n >= 0 => search.seed = *n as u64,
            ("seed", other) => {
                return Err(source.error(&at(&["search", "seed"]), format!("expected an integer >= 0, found {other}")));
            }
            ("method", toml::Value::String(v)) if ["random", "halving", "tpe"].contains(&v.as_str()) => m.method = v,
            ("method", other) => {
                return Err(source.error(
                    &at(&["search", "method"]),
                    format!("expected \"random\", \"halving\" or \"tpe\", found {other}"),
                ));
            }
            ("sampler", toml::Value::String(v)) if v == "random" || v == "tpe" => m.sampler = Some(v),
            ("sampler", other) => {
                return Err(
                    source.error(&at(&["search", "sampler"]), format!("expected \"random\" or \"tpe\", found {other}"))
                );
            }
            ("startup_trials", toml::Value::Integer(n)) if *n >= 1 => m.startup = Some(*n as usize),
            ("candidates", toml::Value::Integer(n)) if (1..=10_000).contains(n) => m.candidates = Some(*n as usize),
            ("startup_trials" | "candidates", other) => {
                return Err(source.error(&at(&["search", key]), format!("expected an integer >= 1, found {other}")));
            }
            ("min_epochs", toml::Value::Integer(n)) if *n >= 1 => m.min_epochs = Some(*n as usize),
            ("min_epochs", other) => {
                return Err(source.error(&at(&["search", "min_epochs"]), format!("expected at least 1, found {other}")));
            }
            ("eta", toml::Value::Integer(n)) if *n >= 2 => m.eta = Some(*n as usize),
            ("eta", other) => {
                return Err(source.error(&at(&["search", "eta"]), format!("expected an integer >= 2, found {other}")));
            }
            ("space", toml::Value::Table(space)) => {
                for (name, spec) in space {
                    search.space.push(parse_dimension(source, name, spec)?);
                }
            }
            ("space", other) => {
                return Err(source.error(
                    &at(&["search", "space"]),
                    format!("expected a table of dotted keys, found {}", other.type_str()),
                ));
            }
            (other, _) => {
                let hint = crate::config::spec::suggest(other, KEYS)
                    .map(|s| format!(", did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(source.error(&at(&["search", other]), format!("unknown key `{other}`{hint}")));
            }
        }
    }
    complete(source, search, m)
}

/// `[search]`'s keys.
const KEYS: &[&str] =
    &["trials", "method", "sampler", "seed", "space", "min_epochs", "eta", "startup_trials", "candidates"];

/// The keys of `[search]` that choose and tune its method.
#[derive(Default)]
struct MethodKeys<'a> {
    method: &'a str,
    sampler: Option<&'a str>,
    min_epochs: Option<usize>,
    eta: Option<usize>,
    startup: Option<usize>,
    candidates: Option<usize>,
}

/// The checks of `[search]` as a whole, once each key is read: the method's own keys,
/// enough trials, a space to sample.
fn complete(source: &SpecSource, mut search: Search, m: MethodKeys) -> Result<Search, SpecError> {
    let at = |path: &[&str]| path.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let MethodKeys { method, sampler, min_epochs, eta, startup, candidates } = m;
    // Halving's trials are drawn at random by default; `sampler = "tpe"` proposes them.
    if sampler.is_some() && method != "halving" {
        return Err(source.error(
            &at(&["search", "sampler"]),
            format!("`sampler` is for method = \"halving\" (method = \"{method}\" chooses its trials itself)"),
        ));
    }
    if method == "tpe" || sampler == Some("tpe") {
        let d = super::tpe::Tpe::default();
        search.tpe = Some(super::tpe::Tpe {
            startup_trials: startup.unwrap_or(d.startup_trials),
            candidates: candidates.unwrap_or(d.candidates),
        });
    } else if let Some(key) =
        [("startup_trials", startup), ("candidates", candidates)].iter().find(|(_, v)| v.is_some()).map(|(k, _)| *k)
    {
        return Err(
            source.error(&at(&["search", key]), format!("`{key}` is for method = \"tpe\" or sampler = \"tpe\""))
        );
    }
    if method == "halving" {
        search.halving = Some(Halving { min_epochs: min_epochs.unwrap_or(1), eta: eta.unwrap_or(3) });
    } else if let Some(key) =
        [("min_epochs", min_epochs), ("eta", eta)].iter().find(|(_, v)| v.is_some()).map(|(k, _)| *k)
    {
        return Err(source.error(&at(&["search", key]), format!("`{key}` is for method = \"halving\"")));
    }
    if search.trials == 0 {
        return Err(source.error(&at(&["search"]), "`trials` is required: how many configurations to sample".into()));
    }
    // A rung promotes its best 1 / eta: with fewer trials than eta nobody would move on.
    if let Some(h) = search.halving.filter(|h| search.trials < h.eta) {
        return Err(source.error(
            &at(&["search", "trials"]),
            format!("halving needs at least eta = {} trials to promote any, found {}", h.eta, search.trials),
        ));
    }
    if search.space.is_empty() {
        return Err(source.error(
            &at(&["search"]),
            "`space` is required: the dotted keys to sample, e.g. \"phases.0.optimizer.lr\" = { log_uniform = [1e-4, 1e-2] }"
                .into(),
        ));
    }
    Ok(search)
}

fn parse_dimension(source: &SpecSource, name: &str, spec: &toml::Value) -> Result<Dimension, SpecError> {
    let location = vec!["search".to_string(), "space".to_string(), name.to_string()];
    let fail = |msg: String| source.error(&location, msg);
    const FORMS: &str =
        "{ log_uniform = [lo, hi] }, { uniform = [lo, hi] }, { int_uniform = [lo, hi] } or { choice = [a, b, ...] }";
    if name.split('.').any(str::is_empty) {
        return Err(fail(format!("`{name}` is not a dotted key")));
    }
    let toml::Value::Table(t) = spec else {
        return Err(fail(format!("expected one of {FORMS}, found {spec}")));
    };
    let (Some((kind, args)), 1) = (t.iter().next(), t.len()) else {
        return Err(fail(format!("expected one of {FORMS}, found {spec}")));
    };
    let pair = |ints: bool| -> Result<(toml::Value, toml::Value), SpecError> {
        match args.as_array().map(Vec::as_slice) {
            Some([a, b]) if ints && a.is_integer() && b.is_integer() => Ok((a.clone(), b.clone())),
            Some([a, b]) if !ints && (a.is_float() || a.is_integer()) && (b.is_float() || b.is_integer()) => {
                Ok((a.clone(), b.clone()))
            }
            _ => Err(fail(format!(
                "`{kind}` takes [lo, hi], two {}, found {args}",
                if ints { "integers" } else { "numbers" }
            ))),
        }
    };
    let num = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).unwrap_or(f64::NAN);
    let dist = match kind.as_str() {
        "log_uniform" => {
            let (a, b) = pair(false)?;
            let (lo, hi) = (num(&a), num(&b));
            if !(lo > 0.0 && lo < hi && hi.is_finite()) {
                return Err(fail(format!("`log_uniform` needs 0 < lo < hi, found [{a}, {b}]")));
            }
            Dist::LogUniform(lo, hi)
        }
        "uniform" => {
            let (a, b) = pair(false)?;
            let (lo, hi) = (num(&a), num(&b));
            // The width too: a draw is lo + (hi - lo) u, which [-1e308, 1e308] overflows.
            if !(lo < hi && lo.is_finite() && hi.is_finite() && (hi - lo).is_finite()) {
                return Err(fail(format!("`uniform` needs lo < hi, both finite and hi - lo too, found [{a}, {b}]")));
            }
            Dist::Uniform(lo, hi)
        }
        "int_uniform" => {
            let (a, b) = pair(true)?;
            let (lo, hi) = (a.as_integer().unwrap_or_default(), b.as_integer().unwrap_or_default());
            if lo > hi {
                return Err(fail(format!("`int_uniform` needs lo <= hi, found [{lo}, {hi}]")));
            }
            Dist::IntUniform(lo, hi)
        }
        "choice" => match args {
            toml::Value::Array(values) if !values.is_empty() => Dist::Choice(values.clone()),
            _ => return Err(fail(format!("`choice` takes a non-empty list of values, found {args}"))),
        },
        other => return Err(fail(format!("unknown distribution `{other}`: expected one of {FORMS}"))),
    };
    Ok(Dimension { key: name.split('.').map(str::to_string).collect(), location, dist })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(space: Vec<(&str, Dist)>) -> Search {
        let space =
            space.into_iter().map(|(k, dist)| Dimension { key: vec![k.into()], location: vec![], dist }).collect();
        Search { trials: 100, seed: 7, space, halving: None, tpe: None }
    }

    #[test]
    fn draws_stay_in_their_ranges_and_cover_them() {
        let s = search(vec![
            ("lr", Dist::LogUniform(1e-4, 1e-2)),
            ("p", Dist::Uniform(0.0, 0.5)),
            ("k", Dist::IntUniform(8, 10)),
            ("b", Dist::Choice(vec![toml::Value::Integer(16), toml::Value::Integer(32)])),
        ]);
        let trials: Vec<Vec<toml::Value>> = (0..400).map(|t| s.sample(t)).collect();
        let lrs: Vec<f64> = trials.iter().map(|v| v[0].as_float().unwrap()).collect();
        assert!(lrs.iter().all(|&x| (1e-4..=1e-2).contains(&x)));
        // Log-uniform: about half the draws below the geometric midpoint 1e-3.
        let below = lrs.iter().filter(|&&x| x < 1e-3).count();
        assert!((150..250).contains(&below), "{below} of 400 below 1e-3");
        let ks: std::collections::BTreeSet<i64> = trials.iter().map(|v| v[2].as_integer().unwrap()).collect();
        assert_eq!(ks.into_iter().collect::<Vec<_>>(), vec![8, 9, 10], "both ends included");
        assert!(trials.iter().all(|v| (0.0..=0.5).contains(&v[1].as_float().unwrap())));
        assert!(
            trials.iter().any(|v| v[3].as_integer() == Some(32))
                && trials.iter().any(|v| v[3].as_integer() == Some(16))
        );
    }

    #[test]
    fn a_trial_is_the_same_whatever_the_number_of_trials_and_seeds_differ() {
        let s = search(vec![("lr", Dist::LogUniform(1e-4, 1e-2)), ("p", Dist::Uniform(0.0, 0.5))]);
        assert_eq!(s.sample(3), s.sample(3));
        assert_ne!(s.sample(3), s.sample(4));
        let other = Search { seed: 8, ..s.clone() };
        assert_ne!(s.sample(3), other.sample(3));
    }

    #[test]
    fn floats_keep_four_significant_digits() {
        assert_eq!(round4(0.000123456), 0.0001235);
        assert_eq!(round4(123.456), 123.5);
        assert_eq!(round4(0.0), 0.0);
    }
}
