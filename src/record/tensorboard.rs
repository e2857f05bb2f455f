//! TensorBoard event files: every run writes `events.out.tfevents.*` in its directory, so
//! `tensorboard --logdir reports/runs` shows every run's curves, its hyperparameters (the
//! hparams plugin) and its curves image.
//!
//! The format is TFRecord framing around serialized `tensorflow.Event` protocol buffers:
//! each record is its length (u64, little-endian), the masked CRC-32C of those 8 bytes, the
//! bytes, and their masked CRC-32C. The messages below carry the field numbers of
//! tensorflow/core/util/event.proto, framework/summary.proto and TensorBoard's
//! plugins/hparams/{api,plugin_data}.proto; prost encodes them.
//!
//! One file per attempt: a resumed run starts a new file holding every epoch so far (the
//! old one is removed), so the file never holds an epoch twice, whatever the crash cut off.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;

use crate::model::Schedule;
use crate::record::run_dir::RunDir;
use crate::record::sink::{Epoch, Records, Sink};
use crate::train::Trainer;
use crate::train::metrics::EpochRecord;

/// `Event` (event.proto): a wall time, a step and what happened.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `Summary` (summary.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

/// `Summary.Value`: a tagged scalar, image, or plugin payload (metadata only).
#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Kind", tags = "2, 4")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "4")]
    Image(Image),
}

/// `Summary.Image`: an encoded PNG.
#[derive(Clone, PartialEq, prost::Message)]
struct Image {
    #[prost(int32, tag = "1")]
    height: i32,
    #[prost(int32, tag = "2")]
    width: i32,
    #[prost(int32, tag = "3")]
    colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    encoded_image_string: Vec<u8>,
}

/// `SummaryMetadata`: which plugin a value is for, with the plugin's own bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    content: Vec<u8>,
}

/// The hparams plugin's `HParamsPluginData`.
#[derive(Clone, PartialEq, prost::Message)]
struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    version: i32,
    #[prost(message, optional, tag = "3")]
    session_start_info: Option<SessionStartInfo>,
    #[prost(message, optional, tag = "4")]
    session_end_info: Option<SessionEndInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    hparams: BTreeMap<String, PbValue>,
    #[prost(string, tag = "4")]
    group_name: String,
    #[prost(double, tag = "5")]
    start_time_secs: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionEndInfo {
    /// `Status`: 1 success, 2 failure, 3 running.
    #[prost(int32, tag = "1")]
    status: i32,
    #[prost(double, tag = "2")]
    end_time_secs: f64,
}

/// `google.protobuf.Value`, the kinds an hparam takes.
#[derive(Clone, PartialEq, prost::Message)]
struct PbValue {
    #[prost(oneof = "PbKind", tags = "2, 3, 4")]
    kind: Option<PbKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum PbKind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    Text(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
}

/// A hyperparameter's value, as the hparams plugin shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HParam {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// How a run ended, for the hparams plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionStatus {
    Success = 1,
    Failure = 2,
}

/// The CRC-32C of `bytes`, masked as TFRecord stores it.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its CRC, the data, its CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

const PREFIX: &str = "events.out.tfevents.";

/// The event files of the run in `dir`: in its folder of events (named by the run's name)
/// and, from runners before that folder, in `dir` itself.
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut files = vec![];
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(PREFIX) {
            files.push(e.path());
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            let inner = std::fs::read_dir(e.path()).into_iter().flatten().flatten();
            files.extend(inner.filter(|f| f.file_name().to_string_lossy().starts_with(PREFIX)).map(|f| f.path()));
        }
    }
    files.sort();
    files
}

/// The folder of a run's event files: a sub-folder of its run folder named by its readable
/// name, so that TensorBoard lists it as `<experiment>/<run id>/lr=0.001,seed=0`; the run
/// folder itself for a run without a name. A `/` (or a leading `.`) in the name becomes `_`,
/// and a name too long for a folder is cut and given its hash.
pub(crate) fn events_dir(run_dir: &Path, name: &str) -> PathBuf {
    if name.is_empty() {
        return run_dir.to_path_buf();
    }
    let mut safe: String =
        name.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    if safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    if safe.len() > 120 {
        let mut cut = 100;
        while !safe.is_char_boundary(cut) {
            cut -= 1;
        }
        safe = format!("{}-{}", &safe[..cut], &crate::sys::fetch::sha256_hex(name.as_bytes())[..8]);
    }
    run_dir.join(safe)
}

/// An open event file of a run.
pub(crate) struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// Starts a new event file in `dir`, a folder of the run in `run_dir` (removing earlier
    /// attempts' files), with its version record.
    pub fn create(run_dir: &Path, dir: &Path, wall_time: f64) -> Result<Self> {
        for old in event_files(run_dir) {
            let _ = std::fs::remove_file(old);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{PREFIX}{:010}.{}.runner", wall_time as u64, std::process::id()));
        let file = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut w = EventWriter { file, path };
        w.write(Event { wall_time, step: 0, what: Some(What::FileVersion("brain.Event:2".into())) })?;
        Ok(w)
    }

    fn write(&mut self, event: Event) -> Result<()> {
        self.file
            .write_all(&record(&event.encode_to_vec()))
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn summary(&mut self, wall_time: f64, step: i64, value: Vec<Value>) -> Result<()> {
        self.write(Event { wall_time, step, what: Some(What::Summary(Summary { value })) })
    }

    /// Scalars `(tag, value)` at `step`.
    pub fn scalars(&mut self, wall_time: f64, step: i64, values: &[(String, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|(tag, v)| Value { tag: tag.clone(), metadata: None, kind: Some(Kind::SimpleValue(*v as f32)) })
            .collect();
        self.summary(wall_time, step, value)
    }

    /// A PNG image of `width` x `height` RGB(A) pixels under `tag`.
    pub fn image(
        &mut self,
        wall_time: f64,
        step: i64,
        tag: &str,
        png: Vec<u8>,
        (width, height): (u32, u32),
    ) -> Result<()> {
        let image = Image { height: height as i32, width: width as i32, colorspace: 4, encoded_image_string: png };
        self.summary(wall_time, step, vec![Value { tag: tag.into(), metadata: None, kind: Some(Kind::Image(image)) }])
    }

    fn hparams_value(&mut self, wall_time: f64, tag: &str, data: HParamsPluginData) -> Result<()> {
        let metadata = SummaryMetadata {
            plugin_data: Some(PluginData { plugin_name: "hparams".into(), content: data.encode_to_vec() }),
        };
        self.summary(wall_time, 0, vec![Value { tag: tag.into(), metadata: Some(metadata), kind: None }])
    }

    /// The run's hyperparameters (the hparams plugin's session start), `group` naming the
    /// session. No experiment definition: TensorBoard derives the experiment of a log dir (each
    /// key's values across runs, whether it differs, the metrics) from every run's session, so
    /// it stays whole as runs are added; a definition in one run would stand for them all.
    pub fn session_start(&mut self, wall_time: f64, group: &str, hparams: &[(String, HParam)]) -> Result<()> {
        let values = hparams
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    HParam::Number(x) => PbKind::Number(*x),
                    HParam::Text(s) => PbKind::Text(s.clone()),
                    HParam::Bool(b) => PbKind::Bool(*b),
                };
                (k.clone(), PbValue { kind: Some(kind) })
            })
            .collect();
        let start = SessionStartInfo { hparams: values, group_name: group.into(), start_time_secs: wall_time };
        self.hparams_value(
            wall_time,
            "_hparams_/session_start_info",
            HParamsPluginData { version: 0, session_start_info: Some(start), ..Default::default() },
        )
    }

    /// The end of the run, for the hparams plugin.
    pub(crate) fn session_end(&mut self, wall_time: f64, status: SessionStatus) -> Result<()> {
        let end = SessionEndInfo { status: status as i32, end_time_secs: wall_time };
        self.hparams_value(
            wall_time,
            "_hparams_/session_end_info",
            HParamsPluginData { version: 0, session_end_info: Some(end), ..Default::default() },
        )
    }
}

/// The hyperparameters of a resolved spec: its dotted keys ([`crate::config::dotted_leaves`]) with
/// scalar values (arrays as their TOML text), `name` and `seed` included.
pub(crate) fn spec_hparams(toml_text: &str) -> Vec<(String, HParam)> {
    let Ok(table) = toml_text.parse::<toml::Table>() else { return vec![] };
    let value = toml::Value::Table(table);
    crate::config::dotted_leaves(&value)
        .into_iter()
        .map(|(key, v)| {
            let h = match v {
                toml::Value::Integer(i) => HParam::Number(*i as f64),
                toml::Value::Float(f) => HParam::Number(*f),
                toml::Value::Boolean(b) => HParam::Bool(*b),
                toml::Value::String(s) => HParam::Text(s.clone()),
                other => HParam::Text(other.to_string()),
            };
            (key, h)
        })
        .collect()
}

/// The run's TensorBoard event file: the hyperparameters at the start, every epoch's
/// scalars, and at the end the curves image and how the run ended. A write error ends
/// the file (run.log says why), never the run.
#[derive(Default)]
pub(crate) struct TensorBoard {
    writer: Option<EventWriter>,
}

impl TensorBoard {
    /// Writes epoch `rows[i]`'s scalars; a write error closes the file.
    fn scalars(&mut self, records: &mut Records, schedule: &Schedule, rows: &[EpochRecord], i: usize) {
        let Some(w) = &mut self.writer else { return };
        if let Err(e) = w.scalars(unix_seconds(), rows[i].epoch as i64, &epoch_scalars(schedule, rows, i)) {
            records.log.line(&format!("warning: TensorBoard events stop here: {e:#}"));
            self.writer = None;
        }
    }
}

impl Sink for TensorBoard {
    fn start(&mut self, records: &mut Records, trainer: &Trainer, rows: &[EpochRecord]) -> Result<()> {
        let wall = unix_seconds();
        let summary = &records.summary;
        let group = if summary.name.is_empty() { summary.run_id.clone() } else { summary.name.clone() };
        let dir = events_dir(records.dir.path(), &summary.name);
        let opened = EventWriter::create(records.dir.path(), &dir, wall).and_then(|mut w| {
            w.session_start(wall, &group, &run_hparams(records.spec))?;
            Ok(w)
        });
        match opened {
            Ok(w) => self.writer = Some(w),
            Err(e) => records.log.line(&format!("warning: no TensorBoard events: {e:#}")),
        }
        for i in 0..rows.len() {
            self.scalars(records, trainer.schedule(), rows, i);
        }
        Ok(())
    }

    fn epoch(&mut self, records: &mut Records, epoch: &Epoch) -> Result<()> {
        if !epoch.diverged {
            self.scalars(records, epoch.trainer.schedule(), epoch.rows, epoch.rows.len() - 1);
        }
        Ok(())
    }

    fn finish(&mut self, records: &mut Records) -> Result<()> {
        let Some(mut w) = self.writer.take() else { return Ok(()) };
        let (wall, step) = (unix_seconds(), records.summary.epochs as i64);
        let completed = records.summary.status == crate::record::summary::Status::Completed;
        let mut result = w.scalars(wall, step, &result_scalars(records.summary));
        let dir = records.dir;
        let images = [
            (dir.curves(), "curves"),
            (dir.file(RunDir::VAL_CONFUSION_PNG), "confusion/val"),
            (dir.confusion_png(), "confusion/test"),
        ];
        for (file, tag) in images {
            let png = std::fs::read(&file).ok().and_then(|png| png_size(&png).map(|size| (png, size)));
            if let (Ok(()), Some((png, size))) = (&result, png) {
                result = w.image(wall, step, tag, png, size);
            }
        }
        let status = if completed { SessionStatus::Success } else { SessionStatus::Failure };
        if let Err(e) = result.and_then(|()| w.session_end(wall, status)) {
            records.log.line(&format!("warning: TensorBoard events incomplete: {e:#}"));
        }
        Ok(())
    }
}

/// The run's results, at its last step: best and final val accuracy, the monitored metric at
/// its best epoch when that is not val accuracy, and the test accuracy (the hparams plugin
/// shows them as metrics beside the hyperparameters).
fn result_scalars(summary: &crate::record::summary::Summary) -> Vec<(String, f64)> {
    let mut out = vec![];
    let mut push = |tag: String, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            out.push((tag, v));
        }
    };
    push("best/val_acc".into(), summary.best_val_acc);
    push("final/val_acc".into(), summary.final_val_acc);
    if summary.monitor != crate::config::spec::Monitor::ValAcc {
        push(format!("best/{}", summary.monitor.name()), summary.best_value);
    }
    push("test/acc".into(), summary.test_acc);
    out
}

/// A run's hyperparameters as the trackers record them: every key of its resolved spec
/// (defaults included) and, as "unset", the keys that other runs of its grid set.
pub(crate) fn run_hparams(spec: &crate::config::spec::Spec) -> Vec<(String, HParam)> {
    let mut h = spec_hparams(&spec.to_toml());
    h.extend(spec.unset_keys.iter().map(|k| (k.clone(), HParam::Text("unset".into()))));
    h
}

/// Seconds since the Unix epoch.
fn unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    let ihdr = png.get(12..24).filter(|_| png.starts_with(b"\x89PNG"))?;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&ihdr[4..8]), be(&ihdr[8..12])))
}

/// Epoch `rows[i]`'s scalars (TensorBoard's, and MLflow's by the same names): losses,
/// accuracies, throughput, the phase's learning rate, and with layer-wise rates the
/// head's and each trainable layer's.
pub(crate) fn epoch_scalars(schedule: &Schedule, rows: &[EpochRecord], i: usize) -> Vec<(String, f64)> {
    let r = &rows[i];
    let mut out = vec![
        ("loss/train".to_string(), r.train_loss),
        ("loss/val".into(), r.val_loss),
        ("accuracy/train".into(), r.train_acc),
        ("accuracy/val".into(), r.val_acc),
        ("lr".into(), r.lr),
        ("images_per_s/train".into(), r.train_images_per_s),
        ("seconds/epoch".into(), r.seconds),
    ];
    let Some(p) = schedule.phases().iter().position(|p| p.name == r.phase) else { return out };
    if schedule.layer_wise(p) {
        let phase_epoch = rows[..i].iter().filter(|x| x.phase == r.phase).count();
        // r.lr times the parameter's scale: the same product the optimizer takes.
        out.push(("lr/head".into(), r.lr * schedule.scale(p, None)));
        for layer in schedule.frozen(p, phase_epoch)..schedule.layers() {
            out.push((format!("lr/layer_{layer:02}"), r.lr * schedule.scale(p, Some(layer))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)]
    fn records_carry_tensorflows_masked_crc32c() {
        // CRC-32C's check value (RFC 3720's "123456789"), then TFRecord's masking.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let framed = record(b"abc");
        assert_eq!(framed.len(), 8 + 4 + 3 + 4);
        assert_eq!(&framed[..8], &3u64.to_le_bytes());
        let crc = crc32c::crc32c(b"abc");
        // Spelled as TensorFlow's MaskedCrc: ((crc >> 15) | (crc << 17)) + kMaskDelta.
        assert_eq!(&framed[15..], &((crc >> 15 | crc << 17).wrapping_add(0xa282_ead8)).to_le_bytes());
    }

    #[test]
    fn spec_hparams_flatten_tables_and_arrays_of_tables() {
        let text =
            "name = \"x\"\nseed = 3\n[data]\naugment = [\"hflip\"]\n[[phases]]\nepochs = 2\n[[phases]]\nlr = 0.5\n";
        let h = spec_hparams(text);
        assert!(h.contains(&("seed".into(), HParam::Number(3.0))), "{h:?}");
        assert!(h.contains(&("phases.1.lr".into(), HParam::Number(0.5))), "{h:?}");
        assert!(h.contains(&("data.augment".into(), HParam::Text("[\"hflip\"]".into()))), "{h:?}");
    }
}
