//! What a spec's types alone cannot check: ranges, combinations and limits, each
//! error naming the dotted key it is about.

use super::*;

/// A value that its type accepts and the spec does not: the dotted key and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub(crate) struct Invalid {
    pub(crate) key: String,
    pub(crate) message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid { key: key.to_string(), message: message.into() }
}

/// What is wrong with the parameters of an augmentation list, if anything.
fn augment_problem(list: &[Augment]) -> Option<String> {
    list.iter().find_map(|a| match *a {
        Augment::RandAugment { n, m } if n == 0 || n > 14 || m > 30 => {
            Some(format!("rand_augment: expected 1 <= n <= 14 and 0 <= m <= 30, found n = {n}, m = {m}"))
        }
        Augment::ColorJitter { brightness, contrast, saturation, hue } => {
            let ok = [brightness, contrast, saturation].iter().all(|v| (0.0..=10.0).contains(v))
                && (0.0..=0.5).contains(&hue);
            (!ok).then(|| {
                format!(
                    "color_jitter: expected brightness, contrast, saturation in [0, 10] and hue in [0, 0.5], found \
                     {brightness}, {contrast}, {saturation}, {hue}"
                )
            })
        }
        Augment::RandomErasing { p } if !(0.0..=1.0).contains(&p) => {
            Some(format!("random_erasing: expected a probability p in [0, 1], found {p}"))
        }
        _ => None,
    })
}

impl DataSpec {
    fn validate(&self) -> Result<(), Invalid> {
        if !(32..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(invalid(
                "data.image_size",
                format!("expected 32 to {MAX_IMAGE_SIZE} pixels, found {}", self.image_size),
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("data.batch_size", "expected at least 1, found 0"));
        }
        if self.labels.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid("data.labels", "expected the path of a CSV table (path, label[, split]), found \"\""));
        }
        if let Some(msg) = augment_problem(&self.augment) {
            return Err(invalid("data.augment", msg));
        }
        for (key, alpha) in [("data.mixup", self.mixup), ("data.cutmix", self.cutmix)] {
            if let Some(a) = alpha
                && !(a > 0.0 && a.is_finite())
            {
                return Err(invalid(key, format!("expected a Beta parameter alpha > 0, found {a}")));
            }
        }
        if self.cache_views > MAX_CACHE_VIEWS {
            return Err(invalid(
                "data.cache_views",
                format!("expected 0 to {MAX_CACHE_VIEWS} views, found {}", self.cache_views),
            ));
        }
        self.validate_folds()?;
        let split_ok = (2..=3).contains(&self.split.len())
            && self.split.iter().all(|f| *f > 0.0 && *f < 1.0)
            && (self.split.iter().sum::<f64>() - 1.0).abs() < 1e-6;
        if !split_ok {
            return Err(invalid(
                "data.split",
                format!(
                    "expected [train, val] or [train, val, test] fractions in (0, 1) that sum to 1, found {:?}",
                    self.split
                ),
            ));
        }
        Ok(())
    }
}

impl DataSpec {
    /// `data.folds` and `data.fold`: 2 to MAX_FOLDS folds, and a fold among them.
    fn validate_folds(&self) -> Result<(), Invalid> {
        match (self.folds, self.fold) {
            (Some(k), _) if !(2..=MAX_FOLDS).contains(&k) => {
                Err(invalid("data.folds", format!("expected 2 to {MAX_FOLDS} folds, found {k}")))
            }
            (Some(k), Some(f)) if f >= k => {
                Err(invalid("data.fold", format!("expected a fold from 0 to {} (data.folds = {k}), found {f}", k - 1)))
            }
            (None, Some(f)) => Err(invalid(
                "data.fold",
                format!("data.fold = {f} needs data.folds, the number of folds (e.g. data.folds = 5)"),
            )),
            _ => Ok(()),
        }
    }
}

impl ModelSpec {
    fn validate(&self) -> Result<(), Invalid> {
        if let Classes::Count(n) = self.head.classes
            && n < 2
        {
            return Err(invalid("model.head.classes", format!("expected at least 2 classes, found {n}")));
        }
        if self.head.hidden.contains(&0) {
            return Err(invalid("model.head.hidden", "hidden layer widths must be at least 1"));
        }
        if let Some(h) = &self.sha256
            && !(h.len() >= 8 && h.len() <= 64 && h.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
        {
            return Err(invalid("model.sha256", format!("expected 8 to 64 lowercase hex digits, found {h:?}")));
        }
        if let Some(p) = self.head.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(invalid("model.head.dropout", format!("expected a probability in [0, 1), found {p}")));
        }
        if self.pool.is_some() && self.backbone.patch_size().is_none() {
            return Err(invalid(
                "model.pool",
                format!(
                    "{} pools its last feature map by global average; `pool` chooses a Vision Transformer's \
                     tokens (vit_b_16, dinov2_vits14, dinov2_vitb14)",
                    self.backbone
                ),
            ));
        }
        Ok(())
    }
}

impl PhaseSpec {
    /// Checks phase `i`; the key is relative to the phase (`optimizer.lr`).
    fn validate(&self, i: usize, backbone: Backbone) -> Result<(), Invalid> {
        if self.epochs == 0 {
            return Err(invalid("epochs", "expected at least 1 epoch, found 0"));
        }
        let layers = backbone.layer_count();
        if let FreezeUpTo::Gradual(g) = self.freeze_up_to {
            if g.every == 0 {
                return Err(invalid("freeze_up_to.every", "expected at least 1 epoch, found 0"));
            }
            if g.from > layers {
                return Err(invalid(
                    "freeze_up_to.from",
                    format!("{backbone} has {layers} layers, so `from` must be at most {layers}, found {}", g.from),
                ));
            }
            if g.to >= g.from {
                return Err(invalid(
                    "freeze_up_to.to",
                    format!("expected `to` below `from` ({}), found {}: layers unfreeze downwards", g.from, g.to),
                ));
            }
        }
        if let FreezeUpTo::Count(n) = self.freeze_up_to
            && n > layers
        {
            return Err(invalid(
                "freeze_up_to",
                format!(
                    "{backbone} has {layers} layers (0..{}), so freeze_up_to must be at most {layers} or \"all\", found {n}",
                    layers - 1
                ),
            ));
        }
        if let Some(msg) = self.augment.as_deref().and_then(augment_problem) {
            return Err(invalid("augment", msg));
        }
        if self.gradient_accumulation == Some(0) {
            return Err(invalid("gradient_accumulation", "expected at least 1 batch, found 0"));
        }
        if let Some(c) = self.clip_grad_norm
            && !(c > 0.0 && c.is_finite())
        {
            return Err(invalid("clip_grad_norm", format!("expected a positive norm, found {c}")));
        }
        self.optimizer.validate(i)?;
        self.schedule.validate(self.epochs)
    }
}

impl OptimizerSpec {
    fn validate(&self, phase: usize) -> Result<(), Invalid> {
        match (self.lr, self.lr_factor) {
            (Some(_), Some(_)) => return Err(invalid("optimizer", "expected one of `lr` or `lr_factor`, found both")),
            (None, None) => {
                return Err(invalid("optimizer", "expected `lr` (or `lr_factor` after the first phase)"));
            }
            (None, Some(_)) if phase == 0 => {
                return Err(invalid("optimizer.lr_factor", "the first phase has no previous learning rate: give `lr`"));
            }
            (Some(Lr::Value(lr)), None) if !(lr > 0.0 && lr.is_finite()) => {
                return Err(invalid("optimizer.lr", format!("expected a positive learning rate, found {lr}")));
            }
            (None, Some(f)) if !(f > 0.0 && f.is_finite()) => {
                return Err(invalid("optimizer.lr_factor", format!("expected a positive factor, found {f}")));
            }
            _ => {}
        }
        let finite_non_negative = |v: f64| v >= 0.0 && v.is_finite();
        if !finite_non_negative(self.momentum) {
            return Err(invalid(
                "optimizer.momentum",
                format!("expected a finite value >= 0, found {}", self.momentum),
            ));
        }
        if let Some(w) = self.weight_decay
            && !finite_non_negative(w)
        {
            return Err(invalid("optimizer.weight_decay", format!("expected a finite value >= 0, found {w}")));
        }
        if let Some(d) = self.layer_decay
            && !(d > 0.0 && d <= 1.0)
        {
            return Err(invalid("optimizer.layer_decay", format!("expected 0 < decay <= 1, found {d}")));
        }
        if let Some(f) = self.head_lr_factor
            && !(f > 0.0 && f.is_finite())
        {
            return Err(invalid("optimizer.head_lr_factor", format!("expected a positive factor, found {f}")));
        }
        if self.nesterov && (self.kind != OptimizerKind::Sgd || self.momentum <= 0.0) {
            return Err(invalid("optimizer.nesterov", "nesterov needs kind = \"sgd\" and a positive momentum"));
        }
        if self.momentum != 0.0 && !matches!(self.kind, OptimizerKind::Sgd | OptimizerKind::Rmsprop) {
            return Err(invalid(
                "optimizer.momentum",
                format!(
                    "momentum is for kind = \"sgd\" or \"rmsprop\"; {:?} keeps its own moving averages (betas)",
                    self.kind
                )
                .to_lowercase(),
            ));
        }
        Ok(())
    }
}

impl ScheduleSpec {
    /// The kinds each optional key belongs to, for the error on a key of another kind.
    fn keys(&self) -> [(&'static str, bool, &'static [ScheduleKind]); 17] {
        use ScheduleKind::*;
        const ONE: &[ScheduleKind] = &[OneCycle];
        const PLATEAU: &[ScheduleKind] = &[ReduceOnPlateau];
        [
            ("step_size", self.step_size.is_some(), &[Step]),
            ("gamma", self.gamma.is_some(), &[Step, Exponential]),
            ("warmup", self.warmup > 0, &[Constant, Step, Exponential, Cosine]),
            ("warmup_steps", self.warmup_steps.is_some(), &[Cosine]),
            ("max_lr_factor", self.max_lr_factor.is_some(), ONE),
            ("pct_start", self.pct_start.is_some(), ONE),
            ("div_factor", self.div_factor.is_some(), ONE),
            ("final_div_factor", self.final_div_factor.is_some(), ONE),
            ("cycle_momentum", self.cycle_momentum.is_some(), ONE),
            ("base_momentum", self.base_momentum.is_some(), ONE),
            ("max_momentum", self.max_momentum.is_some(), ONE),
            ("factor", self.factor.is_some(), PLATEAU),
            ("patience", self.patience.is_some(), PLATEAU),
            ("threshold", self.threshold.is_some(), PLATEAU),
            ("threshold_mode", self.threshold_mode.is_some(), PLATEAU),
            ("cooldown", self.cooldown.is_some(), PLATEAU),
            ("min_lr", self.min_lr.is_some(), PLATEAU),
        ]
    }

    fn validate(&self, epochs: usize) -> Result<(), Invalid> {
        for (key, set, kinds) in self.keys() {
            if set && !kinds.contains(&self.kind) {
                let names: Vec<String> = kinds.iter().map(|k| kind_name(*k)).collect();
                return Err(invalid(
                    &format!("schedule.{key}"),
                    format!("applies to {} schedules, not {}", names.join(" and "), kind_name(self.kind)),
                ));
            }
        }
        let in_range = |key: &str, v: Option<f64>, ok: fn(f64) -> bool, what: &str| match v {
            Some(x) if !ok(x) => Err(invalid(&format!("schedule.{key}"), format!("expected {what}, found {x}"))),
            _ => Ok(()),
        };
        match self.kind {
            ScheduleKind::Step if self.step_size.is_none_or(|s| s == 0) => {
                return Err(invalid("schedule.step_size", "a step schedule needs step_size >= 1"));
            }
            ScheduleKind::Step | ScheduleKind::Exponential if self.gamma.is_none_or(|g| !(g > 0.0 && g <= 1.0)) => {
                return Err(invalid("schedule.gamma", format!("expected gamma in (0, 1], found {:?}", self.gamma)));
            }
            _ => {}
        }
        in_range("max_lr_factor", self.max_lr_factor, |x| x > 0.0 && x.is_finite(), "a number > 0")?;
        in_range("pct_start", self.pct_start, |x| x > 0.0 && x < 1.0, "a share in (0, 1)")?;
        in_range("div_factor", self.div_factor, |x| x >= 1.0 && x.is_finite(), "a number >= 1")?;
        in_range("final_div_factor", self.final_div_factor, |x| x >= 1.0 && x.is_finite(), "a number >= 1")?;
        in_range("base_momentum", self.base_momentum, |x| (0.0..1.0).contains(&x), "a momentum in [0, 1)")?;
        in_range("max_momentum", self.max_momentum, |x| (0.0..1.0).contains(&x), "a momentum in [0, 1)")?;
        in_range("factor", self.factor, |x| x > 0.0 && x < 1.0, "a factor in (0, 1)")?;
        in_range("threshold", self.threshold, |x| x >= 0.0 && x.is_finite(), "a number >= 0")?;
        in_range("min_lr", self.min_lr, |x| x >= 0.0 && x.is_finite(), "a rate >= 0")?;
        if self.warmup >= epochs && self.warmup > 0 {
            return Err(invalid(
                "schedule.warmup",
                format!("expected fewer warm-up epochs than the phase's {epochs}, found {}", self.warmup),
            ));
        }
        Ok(())
    }
}

/// A schedule kind as the spec spells it.
fn kind_name(kind: ScheduleKind) -> String {
    toml::Value::try_from(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

impl Spec {
    /// Checks what types alone cannot, naming the offending dotted key.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let name = &self.name;
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') || name.chars().any(char::is_control)
        {
            return Err(invalid("name", format!("expected a plain name usable as a folder, found {name:?}")));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid("name", format!("expected at most {MAX_NAME_BYTES} bytes, found {}", name.len())));
        }
        if let Some(uri) = &self.tracking.mlflow
            && !(uri.starts_with("http://") || uri.starts_with("https://"))
        {
            return Err(invalid(
                "tracking.mlflow",
                format!("expected an http(s) URL of a tracking server, found {uri:?}"),
            ));
        }
        self.data.validate()?;
        self.model.validate()?;
        if let Some(patch) = self.model.backbone.patch_size()
            && !self.data.image_size.is_multiple_of(patch)
        {
            return Err(invalid(
                "data.image_size",
                format!(
                    "{} cuts images into {patch}x{patch} patches: expected a multiple of {patch}, found {}",
                    self.model.backbone, self.data.image_size
                ),
            ));
        }
        if self.phases.is_empty() {
            return Err(invalid("phases", "expected at least one [[phases]] entry"));
        }
        for (i, p) in self.phases.iter().enumerate() {
            p.validate(i, self.model.backbone).map_err(|e| Invalid { key: format!("phases.{i}.{}", e.key), ..e })?;
        }
        self.loss.validate()?;
        self.validate_training()
    }

    /// The keys around training: EMA, test-time views, divergence, early stopping.
    fn validate_training(&self) -> Result<(), Invalid> {
        if let Some(ema) = &self.ema
            && !(ema.decay > 0.0 && ema.decay < 1.0)
        {
            return Err(invalid("ema.decay", format!("expected 0 < decay < 1, found {}", ema.decay)));
        }
        if let Some(v) = self.eval.tta.iter().enumerate().find_map(|(i, v)| self.eval.tta[..i].contains(v).then_some(v))
        {
            return Err(invalid("eval.tta", format!("{v:?} is listed twice")));
        }
        if let Some(s) = self.eval.tta.iter().find_map(|v| match v {
            TtaView::Scale(s) if !TTA_SCALES.contains(s) => Some(*s),
            _ => None,
        }) {
            let (lo, hi) = (TTA_SCALES.start(), TTA_SCALES.end());
            return Err(invalid("eval.tta", format!("expected a scale from {lo} to {hi}, found {s}")));
        }
        if self.eval.tta.contains(&TtaView::TenCrop)
            && let Some(v) = self.eval.tta.iter().find(|v| **v != TtaView::TenCrop)
        {
            let name = toml::Value::try_from(v).map(|v| v.to_string()).unwrap_or_default();
            return Err(invalid(
                "eval.tta",
                format!("ten_crop already holds the five crops and their mirrors: drop {name}"),
            ));
        }
        if let Some(f) = self.divergence_factor
            && !(f > 1.0 && f.is_finite())
        {
            return Err(invalid("divergence_factor", format!("expected a finite factor above 1, found {f}")));
        }
        if let Some(es) = &self.early_stopping {
            if es.patience == 0 {
                return Err(invalid("early_stopping.patience", "expected at least 1 epoch, found 0"));
            }
            if !(es.min_delta >= 0.0 && es.min_delta.is_finite()) {
                return Err(invalid(
                    "early_stopping.min_delta",
                    format!("expected a finite value >= 0, found {}", es.min_delta),
                ));
            }
        }
        Ok(())
    }
}

impl LossSpec {
    fn validate(&self) -> Result<(), Invalid> {
        let l = self;
        if !(0.0..1.0).contains(&l.label_smoothing) {
            return Err(invalid("loss.label_smoothing", format!("expected 0 <= x < 1, found {}", l.label_smoothing)));
        }
        // At most 1e6: the loss sums weights times losses in float32, which 1e308 overflows.
        if let Some(ClassWeights::Given(w)) = &l.class_weights
            && (w.is_empty() || w.iter().any(|x| !(0.0..=1e6).contains(x)) || w.iter().all(|x| *x == 0.0))
        {
            return Err(invalid(
                "loss.class_weights",
                format!("expected \"balanced\" or weights from 0 to 1e6, not all 0, found {w:?}"),
            ));
        }
        Ok(())
    }
}
