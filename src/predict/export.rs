//! `runner export`: a run's model for use without runner: its weights under the reference
//! implementation's names (`model.safetensors`), a TorchScript module (`model.pt`), an ONNX
//! graph (`model.onnx`), and `model.json`, which says what they are and how inputs are prepared.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tch::{Device, Kind, Tensor};

use super::{ModelCard, Predictor};

/// What `Predictor::export` writes.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub safetensors: bool,
    pub torchscript: bool,
    /// ONNX, converted from the TorchScript module by PyTorch's own exporter, run in this
    /// Python (with torch and onnx installed): libtorch has no ONNX exporter of its own.
    pub onnx: Option<PathBuf>,
    /// The traced modules take 0-255 pixels and normalise them themselves.
    pub preprocessing: bool,
    /// The batch size the modules are traced for.
    pub batch: i64,
}

/// Converts a TorchScript file to ONNX (argv: model.pt, out, batch, side, input scale).
const TO_ONNX: &str = include_str!("export_onnx.py");

/// A TorchScript module's file, in memory. libtorch writes it through a pipe that a thread
/// of ours drains: a file it wrote itself could hit a full disk (or a file size limit), and
/// libtorch's writer then throws from its destructor and aborts the process, leaving its
/// partial file behind. Our own write of the bytes fails cleanly instead.
fn module_bytes(module: &tch::CModule) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors, which the OwnedFds below then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("cannot make a pipe for the TorchScript module: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::fs::File::from(read_end).read_to_end(&mut bytes).map(|_| bytes)
    });
    let saved = module.save(format!("/proc/self/fd/{}", write_end.as_raw_fd()));
    // The reader sees the end of the file once no write end is open: libtorch closed its own.
    drop(write_end);
    let bytes = reader.join().map_err(|_| anyhow::anyhow!("the TorchScript reader thread panicked"))?;
    saved.context("libtorch cannot save the TorchScript module")?;
    bytes.context("cannot read the TorchScript module from its pipe")
}

impl Predictor {
    /// Writes the model into `dir` as `options` asks, and `model.json` beside it.
    pub fn export(&self, dir: &Path, options: &ExportOptions) -> Result<ModelCard> {
        let mut card = self.card.clone().context("only a run's model can be exported")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        card.files.clear();
        if options.safetensors {
            let path = dir.join("model.safetensors");
            let vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
            crate::sys::atomic::with_temp_path(&path, |tmp| Ok(Tensor::write_safetensors(&vars, tmp)?))?;
            card.files.push("model.safetensors".into());
        }
        if options.torchscript || options.onnx.is_some() {
            let module = self.trace(&card, options)?;
            let bytes = module_bytes(&module)?;
            if options.torchscript {
                crate::sys::atomic::write_atomic(&dir.join("model.pt"), &bytes)?;
                card.files.push("model.pt".into());
            }
            if let Some(python) = &options.onnx {
                let traced = tempfile::Builder::new().prefix(".model.pt").tempfile_in(dir)?;
                std::fs::write(traced.path(), &bytes)
                    .with_context(|| format!("cannot write {}", traced.path().display()))?;
                let path = dir.join("model.onnx");
                crate::sys::atomic::with_temp_path(&path, |tmp| to_onnx(python, traced.path(), tmp, &card, options))?;
                card.files.push("model.onnx".into());
            }
            card.torchscript_preprocessing = options.preprocessing;
            card.traced_batch_size = Some(options.batch);
        }
        let json = serde_json::to_string_pretty(&card)?;
        crate::sys::atomic::write_atomic(&dir.join("model.json"), json.as_bytes())?;
        // A model exported into this folder before leaves nothing that model.json does not list.
        for stale in ["model.safetensors", "model.pt", "model.onnx"] {
            if !card.files.iter().any(|f| f == stale) {
                match std::fs::remove_file(dir.join(stale)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e)
                            .with_context(|| format!("cannot remove the earlier {}", dir.join(stale).display()));
                    }
                    _ => {}
                }
            }
        }
        Ok(card)
    }

    /// The inference forward traced into a TorchScript module for `options.batch` images
    /// (with `options.preprocessing`, of 0-255 pixels it normalises itself).
    fn trace(&self, card: &ModelCard, options: &ExportOptions) -> Result<tch::CModule> {
        let side = card.image_size as i64;
        let example = Tensor::rand([options.batch, 3, side, side], (Kind::Float, Device::Cpu));
        let (mean, std) =
            (Tensor::from_slice(&card.mean).view([1, 3, 1, 1]), Tensor::from_slice(&card.std).view([1, 3, 1, 1]));
        let mut forward = |inputs: &[Tensor]| {
            let x = if options.preprocessing { (&inputs[0] / 255.0 - &mean) / &std } else { inputs[0].shallow_clone() };
            let logits = self.model.infer(&x);
            vec![match card.temperature {
                Some(t) => logits / t,
                None => logits,
            }]
        };
        tch::CModule::create_by_tracing("RunnerClassifier", "forward", &[example], &mut forward)
            .context("cannot trace the model")
    }
}

/// Runs PyTorch's ONNX exporter on the TorchScript file `traced`, writing `out`.
fn to_onnx(python: &Path, traced: &Path, out: &Path, card: &ModelCard, options: &ExportOptions) -> Result<()> {
    let scale = if options.preprocessing { "255" } else { "1" };
    let o = std::process::Command::new(python)
        .args(["-c", TO_ONNX])
        .arg(traced)
        .arg(out)
        .args([options.batch.to_string(), card.image_size.to_string(), scale.into()])
        .output()
        .with_context(|| {
            format!(
                "cannot run {} for the ONNX export: --python names a Python with torch and onnx \
                 (pip install torch onnx)",
                python.display()
            )
        })?;
    if !o.status.success() {
        let stderr = String::from_utf8_lossy(&o.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        let why = if tail.is_empty() { "it printed nothing".to_string() } else { tail.join("\n") };
        bail!("the ONNX export in {} failed ({}): {why}", python.display(), o.status);
    }
    // An ONNX file is a ModelProto whose first field is ir_version (field 1, a varint: 0x08).
    let written = std::fs::read(out).unwrap_or_default();
    if written.first() != Some(&0x08) {
        bail!(
            "the ONNX export in {} succeeded but wrote no ONNX model ({} bytes): is it a Python with torch and onnx?",
            python.display(),
            written.len()
        );
    }
    Ok(())
}
