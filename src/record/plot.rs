//! Learning curves: accuracy and loss panels, train and val, with a marker
//! where each later phase (fine-tuning) begins, as in the TensorFlow
//! transfer-learning tutorial's figure.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform};

use crate::record::confusion::Confusion;
use crate::sys::atomic::with_temp_path;
use crate::train::metrics::EpochRecord;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 800;
const FONT: &str = "sans-serif";

/// Headless machines have no system fonts: register the embedded DejaVu Sans once.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to be valid; failure would be a build problem.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Epoch indices (1-based) where a new phase starts, with its name.
pub(crate) fn phase_starts(rows: &[EpochRecord]) -> Vec<(usize, String)> {
    rows.windows(2).filter(|w| w[0].phase != w[1].phase).map(|w| (w[1].epoch, w[1].phase.clone())).collect()
}

/// Draws `curves.png` into `path` (atomically), with a marker before each epoch of
/// `unfrozen` (where gradual unfreezing unfroze a layer).
pub(crate) fn write_curves(path: &Path, title: &str, rows: &[EpochRecord], unfrozen: &[usize]) -> Result<()> {
    write_png(path, (WIDTH, HEIGHT), |root| {
        let root = root.titled(title, (FONT, 22)).map_err(|e| anyhow!("drawing curves: {e}"))?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2 - 15);
        draw_panel(&top, rows, unfrozen, "Accuracy", |r| (r.train_acc, r.val_acc), true)?;
        draw_panel(&bottom, rows, unfrozen, "Loss", |r| (r.train_loss, r.val_loss), false)
    })
}

/// Draws the confusion matrix as `confusion.png`: rows are true classes, columns
/// predictions, each cell shaded by the fraction of its row and labelled with its count.
pub(crate) fn write_confusion(path: &Path, title: &str, split: &str, confusion: &Confusion) -> Result<()> {
    let k = confusion.classes.len().max(1) as i32;
    let cell = (560 / k).clamp(24, 120);
    let label_w = 170;
    let (width, height) = ((label_w + cell * k + 40) as u32, (100 + cell * k + 130) as u32);
    write_png(path, (width, height), |root| {
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the confusion matrix: {e}");
        let title_style = TextStyle::from((FONT, 20).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw_text(
            &format!("{title}: {split} accuracy {:.4}", confusion.accuracy()),
            &title_style,
            (width as i32 / 2, 10),
        )
        .map_err(err)?;
        let (x0, y0) = (label_w, 80);
        let font = |size: i32| TextStyle::from((FONT, size).into_font());
        let label = font(14);
        root.draw_text("predicted", &font(15).pos(Pos::new(HPos::Center, VPos::Top)), (x0 + cell * k / 2, 45))
            .map_err(err)?;
        root.draw_text("true", &font(15).pos(Pos::new(HPos::Left, VPos::Center)), (10, y0 - 20)).map_err(err)?;
        for (i, row) in confusion.counts.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let y = y0 + cell * i as i32;
            let name = truncate_label(&confusion.classes[i]);
            root.draw_text(&name, &label.pos(Pos::new(HPos::Right, VPos::Center)), (x0 - 8, y + cell / 2))
                .map_err(err)?;
            for (j, &n) in row.iter().enumerate() {
                let x = x0 + cell * j as i32;
                let share = if total == 0 { 0.0 } else { n as f64 / total as f64 };
                let shade = |lo: f64, hi: f64| (lo + (hi - lo) * share).round() as u8;
                let fill = RGBColor(shade(247.0, 8.0), shade(251.0, 48.0), shade(255.0, 107.0));
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], fill.filled())).map_err(err)?;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(200, 200, 200))).map_err(err)?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let text = font((cell / 3).clamp(10, 18)).color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                root.draw_text(&n.to_string(), &text, (x + cell / 2, y + cell / 2)).map_err(err)?;
            }
        }
        let rotated = label.transform(FontTransform::Rotate90).pos(Pos::new(HPos::Left, VPos::Center));
        for (j, c) in confusion.classes.iter().enumerate() {
            let x = x0 + cell * j as i32 + cell / 2;
            root.draw_text(&truncate_label(c), &rotated, (x, y0 + cell * k + 8)).map_err(err)?;
        }
        Ok(())
    })
}

/// Renders `width` x `height` pixels with `draw` and writes the PNG atomically.
fn write_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    let img = image::RgbImage::from_raw(width, height, rgb).context("plot buffer has the wrong size")?;
    with_temp_path(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Line colours for overlaid runs (matplotlib's "tab10", which reads well on white).
const SERIES: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Where a later phase starts, in the comparison plot: dark grey dashes, apart from every series colour.
const PHASE_MARKER: RGBColor = RGBColor(80, 80, 80);

/// What an overlay of runs draws per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlay {
    ValAcc,
    ValLoss,
    /// The learning rate, on a log scale.
    Lr,
}

impl Overlay {
    pub(crate) const ALL: [Overlay; 3] = [Overlay::ValAcc, Overlay::ValLoss, Overlay::Lr];

    /// The value drawn (log10 of the learning rate).
    fn value(self, r: &EpochRecord) -> f64 {
        match self {
            Overlay::ValAcc => r.val_acc,
            Overlay::ValLoss => r.val_loss,
            Overlay::Lr => r.lr.log10(),
        }
    }

    fn axis(self) -> &'static str {
        match self {
            Overlay::ValAcc => "val accuracy",
            Overlay::ValLoss => "val loss",
            Overlay::Lr => "learning rate (log scale)",
        }
    }

    /// Its part of a file name and its words in a title.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Overlay::ValAcc => "val_acc",
            Overlay::ValLoss => "val_loss",
            Overlay::Lr => "lr",
        }
    }
}

/// Several runs' curves of `overlay` overlaid, with phase markers.
pub(crate) fn write_comparison(
    path: &Path,
    title: &str,
    runs: &[(String, Vec<EpochRecord>)],
    overlay: Overlay,
) -> Result<()> {
    let series: Vec<Series> = runs
        .iter()
        .map(|(label, rows)| Series {
            label: label.clone(),
            points: rows.iter().map(|r| (r.epoch as f64, overlay.value(r))).filter(|(_, y)| y.is_finite()).collect(),
            band: vec![],
        })
        .collect();
    let mut starts: Vec<(usize, String)> = runs.iter().flat_map(|(_, rows)| phase_starts(rows)).collect();
    starts.sort();
    starts.dedup_by_key(|(epoch, _)| *epoch);
    draw_overlay(path, title, overlay, &series, &starts)
}

/// One curve per configuration: the mean val accuracy of its seed replicates per epoch,
/// in a band of mean ± one standard deviation.
pub(crate) fn write_replicate_bands(path: &Path, title: &str, groups: &[(String, Vec<&[EpochRecord]>)]) -> Result<()> {
    let mut starts = vec![];
    let series: Vec<Series> = groups
        .iter()
        .map(|(label, runs)| {
            let last = runs.iter().filter_map(|rows| rows.last()).map(|r| r.epoch).max().unwrap_or(0);
            starts.extend(runs.first().map(|rows| phase_starts(rows)).unwrap_or_default());
            let mut points = vec![];
            let mut band = vec![];
            for epoch in 1..=last {
                let v: Vec<f64> = runs
                    .iter()
                    .filter_map(|rows| rows.iter().find(|r| r.epoch == epoch).map(|r| r.val_acc))
                    .filter(|x| x.is_finite())
                    .collect();
                if v.is_empty() {
                    continue;
                }
                let n = v.len() as f64;
                let mean = v.iter().sum::<f64>() / n;
                let sd = if v.len() > 1 {
                    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
                } else {
                    0.0
                };
                points.push((epoch as f64, mean));
                band.push((epoch as f64, mean - sd, mean + sd));
            }
            Series { label: format!("{label} (n={})", runs.len()), points, band }
        })
        .collect();
    starts.sort();
    starts.dedup_by_key(|(epoch, _)| *epoch);
    draw_overlay(path, title, Overlay::ValAcc, &series, &starts)
}

/// A curve per epoch, with an optional band (epoch, low, high) around it.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    band: Vec<(f64, f64, f64)>,
}

/// The y range of an overlay: accuracies up to 1, from a little under the lowest; other
/// values padded by 5% of their span.
fn overlay_range(overlay: Overlay, series: &[Series]) -> (f64, f64) {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])))
        .filter(|v| v.is_finite())
        .collect();
    if overlay == Overlay::ValAcc {
        return ((values.iter().copied().fold(1.0, f64::min) - 0.05).clamp(0.0, 0.9), 1.0);
    }
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(0.05);
    (if overlay == Overlay::ValLoss { (lo - pad).max(0.0) } else { lo - pad }, hi + pad)
}

/// The legend beside a chart (never over its data): the phase marker, then each series'
/// colour and label; those beyond the area's height are counted in a last line.
fn draw_legend(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    series: &[Series],
    phase: Option<&str>,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the legend: {e}");
    let row = 18;
    let mut y = 48;
    let entry = |colour: RGBColor, text: String, y: i32| -> Result<()> {
        area.draw(&PathElement::new(vec![(6, y), (30, y)], colour.stroke_width(2))).map_err(err)?;
        area.draw(&Text::new(text, (36, y - 7), (FONT, 12))).map_err(err)
    };
    if let Some(phase) = phase {
        entry(PHASE_MARKER, format!("a later phase starts ({})", truncate_label_to(phase, 20)), y)?;
        y += row;
    }
    let fits = ((area.dim_in_pixel().1 as i32 - y - row) / row).max(1) as usize;
    for (i, s) in series.iter().enumerate().take(fits) {
        entry(SERIES[i % SERIES.len()], truncate_label_to(&s.label, 44), y)?;
        y += row;
    }
    if series.len() > fits {
        area.draw(&Text::new(format!("... and {} more", series.len() - fits), (36, y - 7), (FONT, 12))).map_err(err)?;
    }
    Ok(())
}

fn draw_overlay(
    path: &Path,
    title: &str,
    overlay: Overlay,
    series: &[Series],
    starts: &[(usize, String)],
) -> Result<()> {
    write_png(path, (1200, 560), |root| {
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the comparison: {e}");
        let (plot, legend) = root.split_horizontally(860);
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let last = xs.fold(1.0, f64::max).max(2.0);
        let (lo, hi) = overlay_range(overlay, series);
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .caption(title, (FONT, 20))
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.5..last + 0.5, lo..hi)
            .map_err(err)?;
        let lr_label = |y: &f64| format!("{:.0e}", 10f64.powf(*y));
        let plain_label = |y: &f64| format!("{y:.2}");
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels((last as usize).clamp(2, 20))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(if overlay == Overlay::Lr { &lr_label } else { &plain_label })
            .light_line_style(RGBColor(238, 238, 238))
            .y_desc(overlay.axis())
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(err)?;
        for (epoch, _) in starts {
            let x = *epoch as f64 - 0.5;
            let dashes = (0..20).map(|k| {
                let y = lo + (hi - lo) * k as f64 / 20.0;
                PathElement::new(vec![(x, y), (x, y + (hi - lo) / 40.0)], PHASE_MARKER.stroke_width(2))
            });
            chart.draw_series(dashes).map_err(err)?;
        }
        for (i, s) in series.iter().enumerate() {
            let colour = SERIES[i % SERIES.len()];
            if s.band.len() > 1 {
                let mut outline: Vec<(f64, f64)> = s.band.iter().map(|b| (b.0, b.2.min(hi))).collect();
                outline.extend(s.band.iter().rev().map(|b| (b.0, b.1.max(lo))));
                chart.draw_series([Polygon::new(outline, colour.mix(0.18).filled())]).map_err(err)?;
            }
            chart.draw_series(LineSeries::new(s.points.clone(), colour.stroke_width(2))).map_err(err)?;
            chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, colour.filled()))).map_err(err)?;
        }
        draw_legend(&legend, series, starts.first().map(|(_, p)| p.as_str()))
    })
}

/// A reliability diagram: per confidence bin (count, accuracy, mean confidence), the
/// accuracy as a bar, before calibration (grey) and after (blue), beside the diagonal a
/// calibrated model follows.
pub(crate) fn write_reliability(
    path: &Path,
    title: &str,
    temperature: f64,
    before: &[(usize, f64, f64)],
    after: &[(usize, f64, f64)],
) -> Result<()> {
    write_png(path, (720, 560), |root| {
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the reliability diagram: {e}");
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .caption(format!("{title}: reliability, temperature {temperature:.3}"), (FONT, 18))
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("confidence (top softmax probability)")
            .y_desc("accuracy")
            .light_line_style(RGBColor(238, 238, 238))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(err)?;
        let width = 1.0 / before.len().max(1) as f64;
        for (bins, colour, shift, label) in
            [(before, RGBColor(150, 150, 150), 0.0, "before"), (after, SERIES[0], 0.5, "after")]
        {
            let bars = bins.iter().enumerate().filter(|(_, b)| b.0 > 0).map(move |(i, b)| {
                let x0 = i as f64 * width + shift * width;
                Rectangle::new([(x0, 0.0), (x0 + width / 2.0, b.1)], colour.filled())
            });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        }
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.stroke_width(1)))
            .map_err(err)?
            .label("calibrated")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.stroke_width(1)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// The learning-rate range test: each step's loss (grey) and the smoothed loss against
/// the rate in log scale, with the suggested rate and the steepest descent marked.
pub(crate) fn write_lr_find(path: &Path, title: &str, found: &crate::train::LrFind) -> Result<()> {
    let points: Vec<(f64, f64, f64)> = (0..found.lrs.len())
        .map(|i| (found.lrs[i], found.losses[i], found.smoothed[i]))
        .filter(|p| p.1.is_finite() && p.2.is_finite())
        .collect();
    // The smoothed curve sets the top, the lower of both the bottom: raw spikes above are left out.
    let (lo, hi) =
        points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1).min(p.2), hi.max(p.2)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
    let pad = (hi - lo) * 0.08;
    let (x0, x1) = (found.lrs.first().copied().unwrap_or(1e-7), found.lrs.last().copied().unwrap_or(10.0).max(1e-300));
    write_png(path, (760, 520), |root| {
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the range test: {e}");
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .caption(format!("{title}: learning-rate range test"), (FONT, 18))
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x0..x1 * 1.0001).log_scale(), (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("learning rate (log scale)")
            .y_desc("training loss")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .light_line_style(RGBColor(238, 238, 238))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(err)?;
        let raw = points.iter().filter(|p| p.1 >= lo - pad && p.1 <= hi + pad);
        chart.draw_series(raw.map(|p| Circle::new((p.0, p.1), 2, RGBColor(170, 170, 170).filled()))).map_err(err)?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), SERIES[0].stroke_width(2)))
            .map_err(err)?
            .label("smoothed loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], SERIES[0].stroke_width(2)));
        let marks = [(found.steepest, SERIES[2], "steepest descent"), (Some(found.suggestion), SERIES[1], "suggested")];
        for (lr, colour, label) in marks {
            let Some(lr) = lr.filter(|lr| *lr >= x0 && *lr <= x1) else { continue };
            chart
                .draw_series(LineSeries::new([(lr, lo - pad), (lr, hi + pad)], colour.stroke_width(2)))
                .map_err(err)?
                .label(format!("{label}: {lr:.2e}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// One horizontal bar per run: its best val accuracy (no bar for a run without one).
pub(crate) fn write_best_bars(path: &Path, title: &str, bars: &[(String, Option<f64>)]) -> Result<()> {
    const ROW: i32 = 28;
    const BAR_W: i32 = 460;
    // Room for the longest label (about 7 px a character at 13 px), within reason.
    let longest = bars.iter().map(|(l, _)| l.chars().count().min(58)).max().unwrap_or(8) as i32;
    let label_w = (7 * longest + 24).clamp(120, 420);
    let n = bars.len().max(1) as i32;
    let (width, height) = (label_w + BAR_W + 90, 56 + ROW * n + 40);
    write_png(path, (width as u32, height as u32), |root| {
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the bars: {e}");
        let font = |size: i32| TextStyle::from((FONT, size).into_font());
        root.draw_text(title, &font(20).pos(Pos::new(HPos::Left, VPos::Top)), (14, 12)).map_err(err)?;
        let (x0, y0) = (label_w, 56);
        let bar = RGBColor(31, 119, 180);
        let left = Pos::new(HPos::Left, VPos::Center);
        for (i, (label, value)) in bars.iter().enumerate() {
            let y = y0 + ROW * i as i32;
            let centre = y + ROW / 2;
            let right = Pos::new(HPos::Right, VPos::Center);
            root.draw_text(&truncate_label_to(label, 58), &font(13).pos(right), (x0 - 8, centre)).map_err(err)?;
            match value.filter(|v| v.is_finite()) {
                Some(v) => {
                    let x1 = x0 + (BAR_W as f64 * v.clamp(0.0, 1.0)).round() as i32;
                    root.draw(&Rectangle::new([(x0, y + 4), (x1.max(x0 + 1), y + ROW - 4)], bar.filled()))
                        .map_err(err)?;
                    root.draw_text(&format!("{v:.4}"), &font(13).pos(left), (x1 + 6, centre)).map_err(err)?;
                }
                None => {
                    root.draw_text("no result", &font(13).color(&RED).pos(left), (x0 + 6, centre)).map_err(err)?;
                }
            }
        }
        let axis_y = y0 + ROW * n + 6;
        root.draw(&PathElement::new(vec![(x0, y0 - 4), (x0, axis_y)], BLACK)).map_err(err)?;
        root.draw(&PathElement::new(vec![(x0, axis_y), (x0 + BAR_W, axis_y)], BLACK)).map_err(err)?;
        for tick in 0..=4 {
            let x = x0 + BAR_W * tick / 4;
            root.draw(&PathElement::new(vec![(x, axis_y), (x, axis_y + 4)], BLACK)).map_err(err)?;
            let top = Pos::new(HPos::Center, VPos::Top);
            root.draw_text(&format!("{:.2}", tick as f64 / 4.0), &font(12).pos(top), (x, axis_y + 6)).map_err(err)?;
        }
        Ok(())
    })
}

fn truncate_label_to(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

fn truncate_label(s: &str) -> String {
    truncate_label_to(s, 20)
}

/// The y axis of a panel: accuracies up to 1 from a little below their least, losses from 0.
fn y_range(rows: &[EpochRecord], values: fn(&EpochRecord) -> (f64, f64), is_accuracy: bool) -> (f64, f64) {
    if is_accuracy {
        let min = rows.iter().flat_map(|r| [values(r).0, values(r).1]).fold(1.0, f64::min);
        ((min - 0.05).clamp(0.0, 0.9), 1.0)
    } else {
        let max = rows.iter().flat_map(|r| [values(r).0, values(r).1]).filter(|v| v.is_finite()).fold(0.0, f64::max);
        (0.0, (max * 1.1).max(1e-3))
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    rows: &[EpochRecord],
    unfrozen: &[usize],
    what: &str,
    values: fn(&EpochRecord) -> (f64, f64),
    is_accuracy: bool,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing curves: {e}");
    let last = rows.last().map_or(1, |r| r.epoch).max(2) as f64;
    let (lo, hi) = y_range(rows, values, is_accuracy);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(format!("Training and Validation {what}"), (FONT, 18))
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5..last + 0.5, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(rows.len().clamp(2, 20))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .light_line_style(RGBColor(238, 238, 238))
        .y_desc(what.to_lowercase())
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let series = [("train", BLUE, 0usize), ("val", RED, 1)];
    for (label, colour, which) in series {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| {
                let (t, v) = values(r);
                (r.epoch as f64, if which == 0 { t } else { v })
            })
            .filter(|(_, y)| y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(format!("{label} {}", what.to_lowercase()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled()))).map_err(err)?;
    }
    // A green marker where each later phase starts; a thinner orange one where gradual
    // unfreezing unfroze a layer (labelled once).
    let starts =
        phase_starts(rows).into_iter().map(|(e, phase)| (e, Some(format!("start {phase}")), RGBColor(40, 160, 60), 2));
    let unfreezes = unfrozen
        .iter()
        .enumerate()
        .map(|(i, &e)| (e, (i == 0).then(|| "a layer unfrozen".into()), RGBColor(230, 140, 20), 1));
    for (epoch, label, colour, width) in starts.chain(unfreezes) {
        let x = epoch as f64 - 0.5;
        let drawn = chart
            .draw_series(std::iter::once(PathElement::new(vec![(x, lo), (x, hi)], colour.stroke_width(width))))
            .map_err(err)?;
        if let Some(label) = label {
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width)));
        }
    }
    chart
        .configure_series_labels()
        .position(if is_accuracy { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// curves.png, redrawn after every epoch (a diverged one too), with a marker before each
/// epoch where gradual unfreezing unfroze layers.
pub(crate) struct Curves;

impl crate::record::sink::Sink for Curves {
    fn epoch(&mut self, records: &mut crate::record::sink::Records, epoch: &crate::record::sink::Epoch) -> Result<()> {
        let unfrozen = epoch.trainer.schedule().unfreeze_epochs(epoch.rows.iter().map(|r| (r.epoch, r.phase.as_str())));
        write_curves(&records.dir.curves(), &records.title(), epoch.rows, &unfrozen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, phase: &str) -> EpochRecord {
        EpochRecord {
            epoch,
            phase: phase.into(),
            lr: 1e-3,
            train_loss: 1.0 / epoch as f64,
            train_acc: 0.5 + 0.05 * epoch as f64,
            val_loss: 1.2 / epoch as f64,
            val_acc: 0.45 + 0.05 * epoch as f64,
            seconds: 1.0,
            train_images_per_s: 1.0,
        }
    }

    #[test]
    fn marks_where_each_phase_starts_and_draws_a_png() {
        let rows: Vec<_> = (1..=6).map(|e| row(e, if e <= 3 { "feature_extraction" } else { "fine_tune" })).collect();
        assert_eq!(phase_starts(&rows), vec![(4, "fine_tune".to_string())]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        write_curves(&path, "test", &rows, &[]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // The marker's green appears in the picture, and no unfreezing orange.
        assert!(img.pixels().any(|p| p.0 == [40, 160, 60]));
        assert!(!img.pixels().any(|p| p.0 == [230, 140, 20]));
        write_curves(&path, "test", &rows, &[5]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert!(img.pixels().any(|p| p.0 == [230, 140, 20]), "no unfreezing marker");
    }

    #[test]
    fn confusion_png_shades_cells_by_row_share() {
        let classes: Vec<String> = vec!["cat".into(), "dog".into()];
        let c = Confusion::new(&classes, &[0, 0, 0, 1], &[0, 0, 0, 0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        write_confusion(&path, "t", "test", &c).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // A full row share is the darkest blue; an empty cell the lightest.
        assert!(img.pixels().any(|p| p.0 == [8, 48, 107]));
        assert!(img.pixels().any(|p| p.0 == [247, 251, 255]));
    }

    #[test]
    fn comparison_and_bars_draw_every_run() {
        let a: Vec<_> = (1..=4).map(|e| row(e, if e <= 2 { "head" } else { "fine_tune" })).collect();
        let b: Vec<_> = (1..=3).map(|e| row(e, if e <= 1 { "head" } else { "fine_tune" })).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmp.png");
        write_comparison(&path, "exp", &[("a".into(), a.clone()), ("b".into(), b.clone())], Overlay::ValAcc).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Both runs' colours and the phase marker are in the picture.
        for colour in [SERIES[0], SERIES[1], PHASE_MARKER] {
            assert!(img.pixels().any(|p| p.0 == [colour.0, colour.1, colour.2]), "{colour:?}");
        }
        assert!(!img.pixels().any(|p| p.0 == [SERIES[2].0, SERIES[2].1, SERIES[2].2]), "only two runs");
        // The legend is beside the chart: right of x = 860 there is ink of both colours, and
        // the chart's data area (left of it) keeps the curves.
        let ink_right = |c: RGBColor| {
            (860..img.width()).any(|x| (0..img.height()).any(|y| img.get_pixel(x, y).0 == [c.0, c.1, c.2]))
        };
        assert!(ink_right(SERIES[0]) && ink_right(SERIES[1]), "legend entries right of the chart");
        for overlay in [Overlay::ValLoss, Overlay::Lr] {
            let p = dir.path().join(format!("{}.png", overlay.name()));
            write_comparison(&p, "exp", &[("a".into(), a.clone()), ("b".into(), b.clone())], overlay).unwrap();
            assert!(
                image::open(&p).unwrap().to_rgb8().pixels().any(|p| p.0 == [SERIES[1].0, SERIES[1].1, SERIES[1].2])
            );
        }
        let bars = dir.path().join("bars.png");
        write_best_bars(&bars, "exp", &[("a".into(), Some(0.5)), ("b".into(), Some(1.0)), ("c".into(), None)]).unwrap();
        let img = image::open(&bars).unwrap().to_rgb8();
        // Bar lengths are proportional: the full bar's row is twice the half bar's.
        let blue_in_row = |y: u32| (0..img.width()).filter(|&x| img.get_pixel(x, y).0 == [31, 119, 180]).count();
        let (half, full) = (blue_in_row(56 + 14), blue_in_row(56 + 28 + 14));
        assert!(half > 100 && (full as i64 - 2 * half as i64).abs() <= 2, "{half} {full}");
        assert_eq!(blue_in_row(56 + 56 + 14), 0);
    }
}
