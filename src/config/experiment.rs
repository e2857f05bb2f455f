//! From a spec file to the runs it describes.
//!
//! Layers, last wins (figment does the merging; each layer is its own
//! provider, so an error says which layer gave the bad value):
//!   1. serde defaults (in the `Spec` types);
//!   2. the spec file, without its `[grid]` table;
//!   3. one point of the grid, then one trial of the `[search]` (search.rs);
//!   4. `RUNNER_SPEC__*` environment variables (`RUNNER_SPEC__PHASES__1__OPTIMIZER__LR=1e-5`);
//!   5. `--set key=value` flags, in order.
//!
//! Keys are dotted paths; a number indexes an array (`phases.1.epochs`).
//!
//! The grid: each `[grid]` entry is an axis, a dotted key with a list of
//! values; the runs are the cartesian product of the axes. A sub-table of
//! `[grid]` is a paired axis: its keys' lists (all the same length) vary
//! together. An override of a grid key pins it: a plain axis disappears; a
//! paired axis keeps only the entries where that key has the pinned value.

use std::path::Path;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::config::spec::{Invalid, Spec, SpecSource};
use crate::error::SpecError;

/// Where an override came from, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Env(String),
    Set(String),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Env(var) => format!("environment variable {var}"),
            Origin::Set(raw) => format!("--set {raw}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Override {
    pub key: Vec<String>,
    pub value: toml::Value,
    pub origin: Origin,
}

/// Parses `--set key=value`. The value is read as a TOML value (`1e-5`, `true`,
/// `[1, 2]`, `"x"`), or taken as a plain string when it is not one (`rmsprop`).
/// A malformed one is a spec error naming `file` (the spec it applies to, or `--set`).
pub fn parse_set(raw: &str, file: &Path) -> Result<Override, SpecError> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(SpecError::new(
            file,
            "",
            format!("--set {raw}: expected key=value, e.g. --set phases.1.optimizer.lr=1e-5"),
        ));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(SpecError::new(file, "", format!("--set {raw}: `{key}` is not a dotted key")));
    }
    Ok(Override { key: split_key(key), value: parse_value(value.trim()), origin: Origin::Set(raw.to_string()) })
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn split_key(key: &str) -> Vec<String> {
    key.split('.').map(str::to_string).collect()
}

/// The prefix of spec keys given by environment variables, with `__` between key parts:
/// `RUNNER_SPEC__DATA__BATCH_SIZE=16`. Not plain `RUNNER_`: GitHub Actions sets RUNNER_OS,
/// RUNNER_ARCH, RUNNER_NAME, RUNNER_TEMP and more in every job, and Kubernetes sets
/// RUNNER_SERVICE_HOST, RUNNER_PORT, ... in a pod beside a service named "runner". No CI
/// service or scheduler sets a name with `RUNNER_SPEC__` (a Kubernetes service name cannot
/// end in `-`; GitLab's are CI_*, Slurm's SLURM_*).
pub(crate) const ENV_PREFIX: &str = "RUNNER_SPEC__";

/// Variables under the old prefix that CI services set for their own purpose and that are
/// never read as spec keys, although their name is one (GitHub Actions' RUNNER_NAME is the
/// CI machine's name, not the experiment's).
const CLASHING: &[&str] = &["RUNNER_NAME"];

/// Spec keys from the environment, sorted by variable name: `RUNNER_SPEC__KEY__PART=value`,
/// and, deprecated, the old `RUNNER_KEY__PART=value` where KEY is a top-level spec key that no
/// CI service uses (any other `RUNNER_*` variable is not runner's and is left alone).
pub(crate) fn env_overrides() -> Vec<Override> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| env_key(k).is_some())
        .collect();
    vars.sort();
    vars.into_iter()
        .map(|(var, value)| Override {
            key: env_key(&var).expect("filtered above").split("__").map(str::to_lowercase).collect(),
            value: parse_value(&value),
            origin: Origin::Env(var),
        })
        .collect()
}

/// The key part of a variable that sets a spec key, if it is one.
fn env_key(var: &str) -> Option<&str> {
    if let Some(key) = var.strip_prefix(ENV_PREFIX) {
        return Some(key);
    }
    let key = var.strip_prefix("RUNNER_")?;
    let top = key.split("__").next()?.to_lowercase();
    let legacy = !crate::sys::env::is_setting(var) && !CLASHING.contains(&var) && spec_fields().contains(&top.as_str());
    legacy.then_some(key)
}

/// The old-style variables (`RUNNER_DATA__BATCH_SIZE`) this environment sets, each with its
/// new name: the binary warns about them.
pub fn deprecated_env_vars() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| !k.starts_with(ENV_PREFIX) && env_key(k).is_some())
        .map(|k| {
            let new = format!("{ENV_PREFIX}{}", &k["RUNNER_".len()..]);
            (k, new)
        })
        .collect();
    vars.sort();
    vars
}

/// The top-level keys of a spec, as serde knows them.
fn spec_fields() -> &'static [&'static str] {
    crate::config::spec::struct_fields::<Spec>()
}

/// One run of an experiment: its resolved spec and the grid values that set it apart.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub spec: Spec,
    /// (dotted key, value as TOML) for each grid key, in axis order.
    pub varying: Vec<(String, String)>,
}

pub struct Experiment {
    pub source: SpecSource,
    pub runs: Vec<PlannedRun>,
    /// `[search] method = "halving"`: the runs are trials that share the epochs.
    pub halving: Option<super::search::Halving>,
    /// `[search] method = "tpe"`: the runs are its startup trials; the search proposes the
    /// others from the results.
    pub tpe: Option<std::sync::Arc<TpeTrials>>,
}

/// How the runs of an experiment are built: its layers (the file, the grid's axes, the
/// search's draws, the overrides).
#[derive(Debug, Clone)]
struct Builder {
    source: SpecSource,
    figment: Figment,
    axes: Vec<Axis>,
    search: Option<super::search::Search>,
    overrides: Vec<Override>,
}

impl Builder {
    /// The runs of grid point `point` (one per axis, the index of its value) with the
    /// search's `values` for its keys, when it has a search: one, or one per fold when the
    /// spec has folds and no fold.
    fn build(&self, point: &[usize], values: Option<&[toml::Value]>) -> Result<Vec<PlannedRun>, SpecError> {
        let source = &self.source;
        let mut fig = self.figment.clone();
        let mut varying = vec![];
        for (axis, &i) in self.axes.iter().zip(point) {
            for (key, value) in axis.keys.iter().zip(&axis.points[i]) {
                fig = set(source, fig, key, value, GRID_LAYER, &axis.location)?;
                varying.push((dotted(key), value.to_string()));
            }
        }
        if let (Some(search), Some(values)) = (&self.search, values) {
            for (dim, value) in search.space.iter().zip(values) {
                fig = set(source, fig, &dim.key, value, SEARCH_LAYER, &dim.location)?;
                varying.push((dotted(&dim.key), value.to_string()));
            }
        }
        for o in &self.overrides {
            fig = set(source, fig, &o.key, &o.value, &o.origin.describe(), &[])?;
        }
        let spec = extract(source, fig, &self.axes, self.search.as_ref(), &self.overrides)?;
        Ok(every_fold(PlannedRun { spec, varying }))
    }
}

/// A TPE search's trials: what proposes them and builds their runs.
#[derive(Debug)]
pub struct TpeTrials {
    builder: Builder,
    /// Trials in all.
    pub trials: usize,
    pub settings: crate::config::tpe::Tpe,
}

impl TpeTrials {
    /// Trial `t`'s values, proposed from the finished trials before it (`history`: each
    /// one's values and result; `higher_is_better` for the result).
    pub fn propose(&self, t: usize, history: &[(Vec<toml::Value>, f64)], higher_is_better: bool) -> Vec<toml::Value> {
        self.search().propose(t, history, higher_is_better)
    }

    /// Trial `t`'s values from the observed trials' values, best first.
    pub fn propose_ranked(&self, t: usize, ranked: &[&[toml::Value]]) -> Vec<toml::Value> {
        self.search().propose_ranked(t, ranked)
    }

    /// The run of a trial with these values.
    pub fn run(&self, values: &[toml::Value]) -> Result<PlannedRun, SpecError> {
        let mut run = self.builder.build(&[], Some(values))?.remove(0);
        run.spec.label = run_name(&run.varying);
        Ok(run)
    }

    /// The space's dotted keys, in order.
    pub fn keys(&self) -> Vec<String> {
        self.search().space.iter().map(|d| dotted(&d.key)).collect()
    }

    fn search(&self) -> &super::search::Search {
        self.builder.search.as_ref().expect("a TPE search")
    }
}

/// The checks of a TPE search: no grid (each point would need a search of its own) and one
/// run per trial (no fold expansion); its trials' builder.
fn check_tpe(builder: &Builder, runs: &[PlannedRun]) -> Result<std::sync::Arc<TpeTrials>, SpecError> {
    let (key, what) = match builder.search.as_ref().and_then(|s| s.halving) {
        Some(_) => ("sampler", "sampler = \"tpe\""),
        None => ("method", "method = \"tpe\""),
    };
    if !builder.axes.is_empty() {
        return Err(builder.source.error(
            &["search", key],
            format!("{what} with a [grid]: put the grid's keys in the search space (as choice) instead"),
        ));
    }
    if runs.iter().any(|r| r.spec.data.folds.is_some() && r.spec.data.fold.is_none()) {
        return Err(builder.source.error(
            &["search", key],
            format!("{what} needs one run per trial: set data.fold, or search without folds"),
        ));
    }
    let (trials, settings) =
        builder.search.as_ref().map_or((0, Default::default()), |s| (s.trials, s.tpe.unwrap_or_default()));
    Ok(std::sync::Arc::new(TpeTrials { builder: builder.clone(), trials, settings }))
}

/// One axis of the grid: the keys it sets and, per point, their values.
#[derive(Debug, Clone)]
struct Axis {
    /// Where it is written in the file: `["grid", key]` or `["grid", pair, key]`.
    location: Vec<String>,
    keys: Vec<Vec<String>>,
    points: Vec<Vec<toml::Value>>,
}

fn dotted(key: &[String]) -> String {
    key.join(".")
}

/// A figment layer: a dict under a name, so errors can say where a value came from.
struct Layer {
    name: String,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

const GRID_LAYER: &str = "[grid]";
const SEARCH_LAYER: &str = "[search]";

impl Experiment {
    /// Loads `path` with the environment's and `sets`' overrides and expands its grid.
    pub fn load(path: &Path, sets: &[Override]) -> Result<Experiment, SpecError> {
        let source = SpecSource::read(path)?;
        let mut overrides = env_overrides();
        overrides.extend(sets.iter().cloned());
        Self::from_source(source, &overrides)
    }

    pub(crate) fn from_source(source: SpecSource, overrides: &[Override]) -> Result<Experiment, SpecError> {
        let mut table = source.table()?;
        let axes = match table.remove("grid") {
            None => vec![],
            Some(toml::Value::Table(grid)) => parse_grid(&source, &grid)?,
            Some(other) => {
                return Err(source.error(&["grid"], format!("expected a table of axes, found {}", other.type_str())));
            }
        };
        let axes = pin_axes(&source, axes, overrides)?;
        let search = search_of(&source, &mut table, overrides)?;
        let trials = search.as_ref().map_or(1, |s| s.trials);
        let points = axes.iter().try_fold(trials, |n, a| n.checked_mul(a.points.len())).unwrap_or(usize::MAX);
        let limit = crate::sys::env::limit(crate::sys::env::MAX_GRID_RUNS, MAX_GRID_RUNS as u64);
        if points as u64 > limit {
            return Err(source.error(
                &[if axes.is_empty() { "search" } else { "grid" }],
                format!("{points} runs, more than the limit of {limit} (RUNNER_MAX_GRID_RUNS raises it)"),
            ));
        }
        let base = to_dict(&source, toml::Value::Table(table), &[])?;
        let figment = Figment::new().merge(Layer { name: source.path.display().to_string(), dict: base });

        let builder = Builder { source, figment, axes, search, overrides: overrides.to_vec() };
        let trial_points: Vec<Option<usize>> = match &builder.search {
            // TPE plans its startup trials; the others are proposed from their results as they finish.
            Some(s) if s.tpe.is_some() => (0..trials.min(s.tpe.unwrap_or_default().startup_trials)).map(Some).collect(),
            Some(_) => (0..trials).map(Some).collect(),
            None => vec![None],
        };
        let mut runs = vec![];
        for point in cartesian(&builder.axes) {
            for &t in &trial_points {
                let values = builder.search.as_ref().zip(t).map(|(s, t)| s.sample(t));
                runs.extend(builder.build(&point, values.as_deref())?);
            }
        }
        for run in &mut runs {
            run.spec.label = run_name(&run.varying);
        }
        if runs.len() > 1 {
            mark_unset_keys(&mut runs);
        }
        let source = &builder.source;
        let halving = builder.search.as_ref().and_then(|s| s.halving);
        if let Some(h) = halving {
            check_halving(source, h, &runs)?;
        }
        let tpe = match &builder.search {
            Some(s) if s.tpe.is_some() => Some(check_tpe(&builder, &runs)?),
            _ => None,
        };
        Ok(Experiment { source: builder.source.clone(), runs, halving, tpe })
    }
}

/// One run's spec out of its layers, resolved and validated. An error points at the key's
/// line, at the grid axis or search dimension that set it, or names the override that did.
fn extract(
    source: &SpecSource,
    fig: Figment,
    axes: &[Axis],
    search: Option<&crate::config::search::Search>,
    overrides: &[Override],
) -> Result<Spec, SpecError> {
    let mut locations = axes_locations(axes);
    if let Some(search) = search {
        locations.extend(search.space.iter().map(|d| (dotted(&d.key), d.location.clone())));
    }
    let mut spec: Spec = fig.extract().map_err(|e| source.figment_error(e, &locations))?;
    spec.resolve();
    spec.validate().map_err(|Invalid { key, message: msg }| {
        // A bad value set by an override says so; one set by the grid points at its entry.
        if let Some(o) = overrides.iter().rev().find(|o| dotted(&o.key) == key) {
            return SpecError::new(&source.path, key, format!("{msg} (from {})", o.origin.describe()));
        }
        let at =
            locations.iter().find(|(k, _)| *k == key).map_or_else(|| split_key(&key), |(_, location)| location.clone());
        let mut e = source.error(&at, msg);
        e.key = key;
        e
    })?;
    Ok(spec)
}

/// The spec's `[search]`, taken out of `table`, its keys that an override pins dropped.
fn search_of(
    source: &SpecSource,
    table: &mut toml::Table,
    overrides: &[Override],
) -> Result<Option<super::search::Search>, SpecError> {
    let Some(value) = table.remove("search") else { return Ok(None) };
    let mut search = super::search::parse(source, &value)?;
    search.pin(&overrides.iter().map(|o| o.key.clone()).collect::<Vec<_>>());
    Ok(Some(search))
}

/// Halving needs every trial to have more epochs than its first rung.
fn check_halving(source: &SpecSource, h: super::search::Halving, runs: &[PlannedRun]) -> Result<(), SpecError> {
    match runs.iter().find(|r| r.spec.total_epochs() <= h.min_epochs) {
        Some(short) => Err(source.error(
            &["search", "min_epochs"],
            format!(
                "halving needs more epochs than min_epochs ({}): a trial has {} in all",
                h.min_epochs,
                short.spec.total_epochs()
            ),
        )),
        None => Ok(()),
    }
}

fn axes_locations(axes: &[Axis]) -> Vec<(String, Vec<String>)> {
    axes.iter().flat_map(|a| a.keys.iter().map(move |k| (dotted(k), a.location.clone()))).collect()
}

/// The most runs one spec's grid may expand into.
pub(crate) const MAX_GRID_RUNS: usize = 10_000;

fn parse_grid(source: &SpecSource, grid: &toml::Table) -> Result<Vec<Axis>, SpecError> {
    let mut axes = vec![];
    for (name, value) in grid {
        match value {
            toml::Value::Array(values) => {
                let location = vec!["grid".to_string(), name.clone()];
                if values.is_empty() {
                    return Err(source.error(&location, "a grid axis needs at least one value, found []".into()));
                }
                axes.push(Axis {
                    location,
                    keys: vec![split_key(name)],
                    points: values.iter().map(|v| vec![v.clone()]).collect(),
                });
            }
            toml::Value::Table(pair) => {
                let location = vec!["grid".to_string(), name.clone()];
                let mut keys = vec![];
                let mut columns: Vec<&Vec<toml::Value>> = vec![];
                for (key, values) in pair {
                    let at = vec!["grid".to_string(), name.clone(), key.clone()];
                    let toml::Value::Array(values) = values else {
                        return Err(
                            source.error(&at, format!("expected a list of values, found {}", values.type_str()))
                        );
                    };
                    if values.is_empty() {
                        return Err(source.error(&at, "a grid axis needs at least one value, found []".into()));
                    }
                    if let Some(first) = columns.first()
                        && first.len() != values.len()
                    {
                        return Err(source.error(
                            &at,
                            format!(
                                "the lists of paired axis `{name}` must have the same length: {} has {}, {} has {}",
                                pair.keys().next().map_or("", String::as_str),
                                first.len(),
                                key,
                                values.len()
                            ),
                        ));
                    }
                    keys.push(split_key(key));
                    columns.push(values);
                }
                if keys.is_empty() {
                    return Err(source.error(&location, "a paired axis needs at least one key".into()));
                }
                let points = (0..columns[0].len()).map(|i| columns.iter().map(|c| c[i].clone()).collect()).collect();
                axes.push(Axis { location, keys, points });
            }
            other => {
                return Err(source.error(
                    &["grid".to_string(), name.clone()],
                    format!(
                        "expected a list of values (or a table of lists for a paired axis), found {}",
                        other.type_str()
                    ),
                ));
            }
        }
    }
    check_unique_keys(source, &axes)?;
    Ok(axes)
}

/// One key on two axes would take both values at once, and which one wins is not what
/// the user meant: an error at the second axis.
fn check_unique_keys(source: &SpecSource, axes: &[Axis]) -> Result<(), SpecError> {
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    for axis in axes {
        for key in &axis.keys {
            if let Some(first) = seen.insert(dotted(key), dotted(&axis.location)) {
                return Err(source.error(
                    &axis.location,
                    format!(
                        "`{}` is varied by two grid axes (`{first}` and `{}`)",
                        dotted(key),
                        dotted(&axis.location)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Applies the overrides' pins to the grid.
fn pin_axes(source: &SpecSource, axes: Vec<Axis>, overrides: &[Override]) -> Result<Vec<Axis>, SpecError> {
    let mut out = vec![];
    for mut axis in axes {
        let mut keep = true;
        for o in overrides {
            let Some(col) = axis.keys.iter().position(|k| *k == o.key) else { continue };
            if axis.keys.len() == 1 {
                keep = false;
            } else {
                axis.points.retain(|p| p[col] == o.value);
                if axis.points.is_empty() {
                    return Err(source.error(
                        &axis.location,
                        format!(
                            "{} pins `{}` to {}, which no entry of this paired axis has",
                            o.origin.describe(),
                            dotted(&o.key),
                            o.value
                        ),
                    ));
                }
            }
        }
        if keep {
            out.push(axis);
        }
    }
    Ok(out)
}

/// Indices of every point of the grid (one empty point when there is no grid).
fn cartesian(axes: &[Axis]) -> Vec<Vec<usize>> {
    let mut points = vec![vec![]];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..axis.points.len()).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    points
}

fn to_value(source: &SpecSource, value: &toml::Value, at: &[String]) -> Result<Value, SpecError> {
    Value::serialize(value).map_err(|e| source.error(at, format!("cannot use this value: {e}")))
}

fn to_dict(source: &SpecSource, value: toml::Value, at: &[String]) -> Result<Dict, SpecError> {
    match to_value(source, &value, at)? {
        Value::Dict(_, d) => Ok(d),
        _ => Err(source.error(at, "expected a table".into())),
    }
}

/// Sets `key` to `value` on top of `fig` as a new layer named `layer`. Array
/// elements are addressed by index, so the whole top-level value is re-provided.
fn set(
    source: &SpecSource,
    fig: Figment,
    key: &[String],
    value: &toml::Value,
    layer: &str,
    location: &[String],
) -> Result<Figment, SpecError> {
    let at: Vec<String> = if location.is_empty() { key.to_vec() } else { location.to_vec() };
    let fail = |msg: String| {
        let in_file = layer == GRID_LAYER || layer == SEARCH_LAYER;
        let mut e = source.error(if in_file { &at } else { &[] }, msg);
        e.key = dotted(key);
        if !in_file {
            e.message.push_str(&format!(" (from {layer})"));
        }
        e
    };
    let top = &key[0];
    let mut current = fig.find_value(top).unwrap_or_else(|_| Value::Dict(Default::default(), Dict::new()));
    let new = to_value(source, value, &at)?;
    set_in(&mut current, &key[1..], new, top, &fail)?;
    let mut dict = Dict::new();
    dict.insert(top.clone(), current);
    Ok(fig.merge(Layer { name: layer.to_string(), dict }))
}

fn set_in(
    target: &mut Value,
    path: &[String],
    new: Value,
    at: &str,
    fail: &dyn Fn(String) -> SpecError,
) -> Result<(), SpecError> {
    let Some((head, rest)) = path.split_first() else {
        *target = new;
        return Ok(());
    };
    let here = format!("{at}.{head}");
    match target {
        Value::Array(_, items) => {
            let len = items.len();
            let index: usize =
                head.parse().map_err(|_| fail(format!("`{at}` is a list: index it with a number, not `{head}`")))?;
            let item = items
                .get_mut(index)
                .ok_or_else(|| fail(format!("`{at}` has {len} entries, so there is no index {index}")))?;
            set_in(item, rest, new, &here, fail)
        }
        Value::Dict(_, dict) => {
            let entry = dict.entry(head.clone()).or_insert_with(|| Value::Dict(Default::default(), Dict::new()));
            set_in(entry, rest, new, &here, fail)
        }
        _ => Err(fail(format!("`{at}` is a single value, so it has no key `{head}`"))),
    }
}

/// A run of a spec with `data.folds` and no `data.fold`: one run per fold, as a grid axis
/// `data.fold = [0, ..., folds - 1]` would give.
fn every_fold(run: PlannedRun) -> Vec<PlannedRun> {
    let (Some(k), None) = (run.spec.data.folds, run.spec.data.fold) else { return vec![run] };
    (0..k)
        .map(|fold| {
            let mut r = run.clone();
            r.spec.data.fold = Some(fold);
            r.varying.push(("data.fold".into(), fold.to_string()));
            r
        })
        .collect()
}

/// Each run's `unset_keys`: the keys of the grid's other runs that its own config lacks.
fn mark_unset_keys(runs: &mut [PlannedRun]) {
    let leaf_keys = |spec: &Spec| -> std::collections::BTreeSet<String> {
        let table: toml::Table = toml::from_str(&spec.to_toml()).unwrap_or_default();
        crate::config::dotted_leaves(&toml::Value::Table(table)).into_iter().map(|(k, _)| k).collect()
    };
    let own: Vec<_> = runs.iter().map(|r| leaf_keys(&r.spec)).collect();
    let all: std::collections::BTreeSet<&String> = own.iter().flatten().collect();
    for (run, keys) in runs.iter_mut().zip(&own) {
        run.spec.unset_keys = all.iter().filter(|k| !keys.contains(**k)).map(|k| (*k).clone()).collect();
    }
}

/// A run's readable name from the values its grid point sets: each key by its last part
/// (more parts where two keys end alike: `0.optimizer.lr`, `1.optimizer.lr`), strings
/// without quotes, long decimals cut to four significant digits: `lr=0.001,freeze_up_to=12,seed=0`.
pub fn run_name(varying: &[(String, String)]) -> String {
    let parts = |k: &str| k.split('.').map(str::to_string).collect::<Vec<_>>();
    let suffix = |k: &str, n: usize| {
        let p = parts(k);
        p[p.len().saturating_sub(n)..].join(".")
    };
    varying
        .iter()
        .map(|(key, value)| {
            let n = (1..=parts(key).len())
                .find(|&n| varying.iter().filter(|(k, _)| suffix(k, n) == suffix(key, n)).count() == 1)
                .unwrap_or(usize::MAX);
            format!("{}={}", suffix(key, n), short_value(value))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A TOML value as a name shows it: a string without its quotes, a table or array without
/// spaces and quotes (`{kind=adam,lr=0.001}`), a float of more than four significant digits
/// in scientific notation with four (`1.235e-4`).
fn short_value(value: &str) -> String {
    if let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        return text.to_string();
    }
    if value.starts_with(['{', '[']) {
        return value.chars().filter(|c| !matches!(c, ' ' | '"')).collect();
    }
    match value.parse::<f64>() {
        Ok(x) if value.contains('.') && value.trim_start_matches(['-', '0', '.']).len() > 5 => {
            let s = format!("{x:.3e}");
            let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
            let scientific = format!("{}e{exp}", mantissa.trim_end_matches('0').trim_end_matches('.'));
            let plain = scientific.parse::<f64>().map_or(String::new(), |y| y.to_string());
            if plain.len() <= scientific.len() { plain } else { scientific }
        }
        _ => value.to_string(),
    }
}

/// A short table of the values that vary, for `runner plan` and run headers.
pub fn describe_varying(varying: &[(String, String)]) -> String {
    if varying.is_empty() {
        return "-".to_string();
    }
    varying.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Spec's constructors from a file or text: they read it as an experiment of one run
/// (here, not in spec.rs, so that spec.rs stays below this module).
impl Spec {
    /// Reads the single-run spec at `path` (with `RUNNER_*` overrides); a grid is an error here.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let source = SpecSource::read(path)?;
        Self::single(Experiment::from_source(source, &env_overrides())?)
    }

    /// Parses spec text; `path` is only used to name the file in errors.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Spec, SpecError> {
        let source = SpecSource::new(path, text.to_string())?;
        Self::single(Experiment::from_source(source, &[])?)
    }

    fn single(mut exp: Experiment) -> Result<Spec, SpecError> {
        if exp.runs.len() != 1 {
            return Err(exp
                .source
                .error(&["grid"], format!("expected a single run, but the grid gives {}", exp.runs.len())));
        }
        Ok(exp.runs.remove(0).spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn run_names_are_last_key_parts_and_plain_values() {
        let name = run_name(&pairs(&[
            ("phases.1.optimizer.lr", "0.001"),
            ("phases.1.freeze_up_to", "12"),
            ("optimizer.kind", "\"adam\""),
            ("seed", "0"),
        ]));
        assert_eq!(name, "lr=0.001,freeze_up_to=12,kind=adam,seed=0");
        // Keys that end alike keep as many parts as tell them apart.
        let name = run_name(&pairs(&[("phases.0.optimizer.lr", "0.01"), ("phases.1.optimizer.lr", "0.001")]));
        assert_eq!(name, "0.optimizer.lr=0.01,1.optimizer.lr=0.001");
        assert_eq!(run_name(&[]), "");
    }

    #[test]
    fn long_decimals_are_cut_to_four_significant_digits() {
        assert_eq!(short_value("0.000123456789"), "1.235e-4");
        assert_eq!(short_value("0.25"), "0.25");
        assert_eq!(short_value("1e-5"), "1e-5");
        assert_eq!(short_value("0.0001"), "0.0001");
        assert_eq!(short_value("3"), "3");
        assert_eq!(short_value("{ kind = \"adam\", lr = 0.001 }"), "{kind=adam,lr=0.001}");
        assert_eq!(short_value("0.1000000000000001"), "0.1");
    }

    #[test]
    fn keys_only_some_grid_points_set_are_marked_unset_in_the_others() {
        let source = SpecSource::new(
            Path::new("g.toml"),
            "name = \"g\"\n[data]\nsource = \"d\"\n[model]\nbackbone = \"resnet18\"\n\
             [[phases]]\nname = \"a\"\nepochs = 1\nfreeze_up_to = \"all\"\noptimizer = { kind = \"sgd\", lr = 0.1 }\n\
             [grid]\n\"phases.0.optimizer\" = [{ kind = \"sgd\", lr = 0.1, weight_decay = 1e-4 }, { kind = \"adam\", lr = 1e-3 }]\n"
                .to_string(),
        )
        .unwrap();
        let exp = Experiment::from_source(source, &[]).unwrap();
        assert_eq!(exp.runs.len(), 2);
        assert!(exp.runs[0].spec.unset_keys.is_empty(), "{:?}", exp.runs[0].spec.unset_keys);
        assert_eq!(exp.runs[1].spec.unset_keys, ["phases.0.optimizer.weight_decay"]);
    }

    #[test]
    fn folds_without_a_fold_run_every_fold() {
        let source = SpecSource::new(
            Path::new("f.toml"),
            "name = \"f\"\n[data]\nsource = \"d\"\nfolds = 3\n[model]\nbackbone = \"resnet18\"\n\
             [[phases]]\nname = \"a\"\nepochs = 1\nfreeze_up_to = \"all\"\noptimizer = { kind = \"sgd\", lr = 0.1 }\n\
             [grid]\nseed = [0, 1]\n"
                .to_string(),
        )
        .unwrap();
        let exp = Experiment::from_source(source, &[]).unwrap();
        let names: Vec<&str> = exp.runs.iter().map(|r| r.spec.label.as_str()).collect();
        assert_eq!(
            names,
            ["seed=0,fold=0", "seed=0,fold=1", "seed=0,fold=2", "seed=1,fold=0", "seed=1,fold=1", "seed=1,fold=2"]
        );
        assert!(exp.runs.iter().all(|r| r.spec.data.folds == Some(3)));
    }
}
