//! MLflow tracking through its REST API (`/api/2.0/mlflow/...`): each run is an MLflow run
//! named by its run id, in the experiment named by the spec, with the resolved spec's dotted
//! keys as params, every epoch's metrics, tags (status, runner and numerics version) and, at
//! the end, the best weights, the curves and the summary as artifacts (through the server's
//! artifact proxy, `/api/2.0/mlflow-artifacts/`, which `mlflow server` serves by default).
//!
//! A tracking server that is down or slow never fails or stalls a run: every call has a
//! short timeout and is tried three times; after that tracking stops for the rest of the
//! run, and run.log and summary.json say why.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::model::Schedule;
use crate::record::sink::{Epoch, Records, Sink};
use crate::record::tensorboard::{HParam, epoch_scalars, run_hparams};
use crate::train::Trainer;
use crate::train::metrics::EpochRecord;

/// How long one call may take, and how often it is tried.
const TIMEOUT: Duration = Duration::from_secs(5);
const TRIES: usize = 3;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A run being logged to an MLflow server.
pub(crate) struct MlflowRun {
    uri: String,
    agent: ureq::Agent,
    pub(crate) run_id: String,
    pub(crate) experiment_id: String,
    /// Where the server keeps the run's artifacts (`mlflow-artifacts:/<exp>/<run>/artifacts`).
    artifact_uri: String,
}

/// What went wrong with a call: the server's answer, or no answer.
fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Result<Value> {
    let mut last = anyhow!("not tried");
    for attempt in 0..TRIES {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(300 * attempt as u64));
        }
        let response = match (method, body) {
            ("GET", _) => agent.get(url).call(),
            (_, Some(b)) => agent
                .post(url)
                .header("content-type", "application/json")
                .send(&serde_json::to_vec(b).expect("JSON values serialize")[..]),
            (_, None) => agent.post(url).send_empty(),
        };
        match response {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                if status == 200 {
                    return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = parsed["error_code"].as_str().unwrap_or("").to_string();
                // The server's own refusals are answers, not outages: no retry.
                if (400..500).contains(&status) {
                    bail!("{code}: HTTP {status} {}", parsed["message"].as_str().unwrap_or(&text));
                }
                last = anyhow!("HTTP {status} from {url}: {}", text.chars().take(200).collect::<String>());
            }
            Err(e) => last = anyhow!("{url}: {e}"),
        }
    }
    Err(last.context(format!("{TRIES} tries")))
}

impl MlflowRun {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).http_status_as_error(false).build().into()
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.uri)
    }

    /// The MLflow run of runner's run `run_id` (tag `runner.run_id`) in experiment
    /// `experiment`: created, named `run_name`, with its start tags when missing; an existing
    /// one, a resumed run's, is continued.
    pub fn start(
        uri: &str,
        experiment: &str,
        run_id: &str,
        run_name: &str,
        tags: &[(&str, String)],
    ) -> Result<MlflowRun> {
        let uri = uri.trim_end_matches('/').to_string();
        let agent = Self::agent();
        let api = |p: &str| format!("{uri}/api/2.0/mlflow/{p}");
        let by_name = |agent: &ureq::Agent| {
            let url = format!(
                "{}?experiment_name={}",
                api("experiments/get-by-name"),
                percent_encoding::utf8_percent_encode(experiment, percent_encoding::NON_ALPHANUMERIC)
            );
            call(agent, "GET", &url, None).map(|v| v["experiment"]["experiment_id"].as_str().map(str::to_string))
        };
        let experiment_id = match by_name(&agent) {
            Ok(Some(id)) => id,
            Ok(None) | Err(_) => {
                match call(&agent, "POST", &api("experiments/create"), Some(&json!({"name": experiment}))) {
                    Ok(v) => {
                        v["experiment_id"].as_str().map(str::to_string).context("no experiment_id in the answer")?
                    }
                    // Another run of the grid created it meanwhile.
                    Err(e) if e.to_string().contains("RESOURCE_ALREADY_EXISTS") => {
                        by_name(&agent)?.context("the experiment exists but cannot be read")?
                    }
                    Err(e) => return Err(e.context(format!("cannot create MLflow experiment {experiment:?}"))),
                }
            }
        };
        let filter = format!("tags.`runner.run_id` = '{}'", run_id.replace('\'', ""));
        let found = call(
            &agent,
            "POST",
            &api("runs/search"),
            Some(&json!({"experiment_ids": [experiment_id], "filter": filter, "max_results": 1})),
        )?;
        let run = match found["runs"].get(0) {
            Some(run) => {
                let id = run["info"]["run_id"].as_str().context("a run without run_id")?;
                call(&agent, "POST", &api("runs/update"), Some(&json!({"run_id": id, "status": "RUNNING"})))?;
                run.clone()
            }
            None => {
                let mut tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                tags.push(json!({"key": "runner.run_id", "value": run_id}));
                let body =
                    json!({"experiment_id": experiment_id, "run_name": run_name, "start_time": now_ms(), "tags": tags});
                call(&agent, "POST", &api("runs/create"), Some(&body))?["run"].clone()
            }
        };
        let run_id = run["info"]["run_id"].as_str().context("no run_id in the answer")?.to_string();
        let artifact_uri = run["info"]["artifact_uri"].as_str().unwrap_or_default().to_string();
        Ok(MlflowRun { uri, agent, run_id, experiment_id, artifact_uri })
    }

    /// Params, metrics and tags in batches of the sizes the API takes (100 params, 1000 metrics).
    fn log_batch(&self, params: &[(String, String)], metrics: &[Value], tags: &[(String, String)]) -> Result<()> {
        let kv = |items: &[(String, String)]| -> Vec<Value> {
            items.iter().map(|(k, v)| json!({"key": k, "value": v.chars().take(6000).collect::<String>()})).collect()
        };
        for chunk in params.chunks(100) {
            let body = json!({"run_id": self.run_id, "params": kv(chunk)});
            call(&self.agent, "POST", &self.api("runs/log-batch"), Some(&body))?;
        }
        for chunk in metrics.chunks(1000) {
            call(
                &self.agent,
                "POST",
                &self.api("runs/log-batch"),
                Some(&json!({"run_id": self.run_id, "metrics": chunk})),
            )?;
        }
        if !tags.is_empty() {
            call(
                &self.agent,
                "POST",
                &self.api("runs/log-batch"),
                Some(&json!({"run_id": self.run_id, "tags": kv(tags)})),
            )?;
        }
        Ok(())
    }

    pub(crate) fn log_params(&self, params: &[(String, String)]) -> Result<()> {
        self.log_batch(params, &[], &[])
    }

    /// Metrics `(key, value)` at `step`.
    pub(crate) fn log_metrics(&self, step: i64, values: &[(String, f64)]) -> Result<()> {
        let t = now_ms();
        let metrics: Vec<Value> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": t, "step": step}))
            .collect();
        self.log_batch(&[], &metrics, &[])
    }

    pub(crate) fn set_tags(&self, tags: &[(String, String)]) -> Result<()> {
        self.log_batch(&[], &[], tags)
    }

    /// Uploads `file` as artifact `name` through the server's artifact proxy.
    pub(crate) fn upload(&self, file: &Path, name: &str) -> Result<()> {
        let Some(path) = self.artifact_uri.strip_prefix("mlflow-artifacts:") else {
            bail!("the server keeps artifacts at {} (not proxied: start it with --serve-artifacts)", self.artifact_uri);
        };
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{}/{name}", self.uri, path.trim_start_matches('/'));
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut last = anyhow!("not tried");
        for _ in 0..TRIES {
            match self.agent.put(&url).send(&bytes[..]) {
                Ok(r) if r.status().as_u16() == 200 => return Ok(()),
                Ok(r) => last = anyhow!("HTTP {} for {url}", r.status()),
                Err(e) => last = anyhow!("{url}: {e}"),
            }
        }
        Err(last)
    }

    /// Ends the run: FINISHED, FAILED or KILLED.
    pub fn end(&self, status: &str) -> Result<()> {
        let body = json!({"run_id": self.run_id, "status": status, "end_time": now_ms()});
        call(&self.agent, "POST", &self.api("runs/update"), Some(&body)).map(|_| ())
    }
}

/// The run's MLflow run, when `tracking.mlflow_uri` names a server: params and tags at
/// the start (a resumed run continues its own), every epoch's metrics, and at the end the
/// best weights, curves and summary as artifacts and the run's status. A failure stops
/// the tracking (run.log and summary.json say why), never the run.
#[derive(Default)]
pub(crate) struct Mlflow {
    run: Option<MlflowRun>,
}

impl Mlflow {
    /// Tracking failed: no more calls this run.
    fn failed(&mut self, records: &mut Records, uri: &str, e: &anyhow::Error) {
        self.run = None;
        records.log.line(&format!("warning: MLflow tracking at {uri} failed, the run goes on without it: {e:#}"));
        records.summary.tracking = Some(format!("mlflow: failed at {uri}: {e:#}"));
    }

    /// Epoch `rows[i]`'s metrics (the TensorBoard scalars, by the same names).
    fn metrics(&mut self, records: &mut Records, schedule: &Schedule, rows: &[EpochRecord], i: usize) {
        let Some(run) = &self.run else { return };
        if let Err(e) = run.log_metrics(rows[i].epoch as i64, &epoch_scalars(schedule, rows, i)) {
            let uri = records.spec.tracking.mlflow_uri().unwrap_or_default();
            self.failed(records, &uri, &e);
        }
    }
}

impl Sink for Mlflow {
    fn start(&mut self, records: &mut Records, trainer: &Trainer, rows: &[EpochRecord]) -> Result<()> {
        let Some(uri) = records.spec.tracking.mlflow_uri() else { return Ok(()) };
        let spec = records.spec;
        let tags = [
            ("runner.version", env!("CARGO_PKG_VERSION").to_string()),
            ("runner.numerics_version", records.summary.numerics_version.to_string()),
            ("runner.status", "running".to_string()),
            ("runner.backbone", spec.model.backbone.to_string()),
        ];
        let params: Vec<(String, String)> = run_hparams(spec)
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    HParam::Number(x) => format!("{x}"),
                    HParam::Text(s) => s,
                    HParam::Bool(b) => b.to_string(),
                };
                (k, v)
            })
            .collect();
        let summary = &records.summary;
        let name = if summary.name.is_empty() { &summary.run_id } else { &summary.name };
        let started = MlflowRun::start(&uri, &spec.name, &summary.run_id, name, &tags)
            .and_then(|run| run.log_params(&params).map(|()| run));
        match started {
            Ok(run) => {
                records.log.line(&format!("MLflow: run {} in experiment {} at {uri}", run.run_id, run.experiment_id));
                records.summary.tracking = Some(format!("mlflow: run {} at {uri}", run.run_id));
                self.run = Some(run);
            }
            Err(e) => self.failed(records, &uri, &e),
        }
        for i in 0..rows.len() {
            self.metrics(records, trainer.schedule(), rows, i);
        }
        Ok(())
    }

    fn epoch(&mut self, records: &mut Records, epoch: &Epoch) -> Result<()> {
        if !epoch.diverged {
            self.metrics(records, epoch.trainer.schedule(), epoch.rows, epoch.rows.len() - 1);
        }
        Ok(())
    }

    /// After the run's own end: a failure here is recorded in run.log and summary.json
    /// (rewritten), never raised.
    fn finish(&mut self, records: &mut Records) -> Result<()> {
        use crate::record::summary::Status;
        let Some(run) = self.run.take() else { return Ok(()) };
        let (dir, status) = (records.dir, records.summary.status);
        let result = (|| -> anyhow::Result<()> {
            for file in [dir.best(), dir.curves(), dir.summary()] {
                if file.is_file() {
                    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    run.upload(&file, &name)?;
                }
            }
            run.set_tags(&[("runner.status".to_string(), status.name().to_string())])?;
            run.end(match status {
                Status::Completed => "FINISHED",
                Status::Interrupted | Status::Paused => "KILLED",
                _ => "FAILED",
            })
        })();
        if let Err(e) = result {
            records.log.line(&format!("warning: MLflow tracking failed at the end of the run: {e:#}"));
            records.summary.tracking = Some(format!("mlflow: failed at the end of run {}: {e:#}", run.run_id));
            let _ = records.summary.write(dir);
        }
        Ok(())
    }
}
