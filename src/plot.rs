//! Learning curves: accuracy and loss panels, train and val, with a marker
//! where each later phase (fine-tuning) begins, as in the TensorFlow
//! transfer-learning tutorial's figure.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform};

use crate::atomic::with_temp_path;
use crate::confusion::Confusion;
use crate::table::EpochRecord;

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
pub fn phase_starts(rows: &[EpochRecord]) -> Vec<(usize, String)> {
    rows.windows(2).filter(|w| w[0].phase != w[1].phase).map(|w| (w[1].epoch, w[1].phase.clone())).collect()
}

/// Draws `curves.png` into `path` (atomically).
pub fn write_curves(path: &Path, title: &str, rows: &[EpochRecord]) -> Result<()> {
    register_font();
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing curves: {e}"))?;
        let root = root.titled(title, (FONT, 22)).map_err(|e| anyhow!("drawing curves: {e}"))?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2 - 15);
        draw_panel(&top, rows, "Accuracy", |r| (r.train_acc, r.val_acc), true)?;
        draw_panel(&bottom, rows, "Loss", |r| (r.train_loss, r.val_loss), false)?;
        root.present().map_err(|e| anyhow!("drawing curves: {e}"))?;
    }
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, rgb).context("curves buffer has the wrong size")?;
    with_temp_path(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Draws the confusion matrix as `confusion.png`: rows are true classes, columns
/// predictions, each cell shaded by the fraction of its row and labelled with its count.
pub fn write_confusion(path: &Path, title: &str, confusion: &Confusion) -> Result<()> {
    register_font();
    let k = confusion.classes.len().max(1) as i32;
    let cell = (560 / k).clamp(24, 120);
    let label_w = 170;
    let (width, height) = ((label_w + cell * k + 40) as u32, (100 + cell * k + 130) as u32);
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    {
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the confusion matrix: {e}");
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title_style = TextStyle::from((FONT, 20).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw_text(
            &format!("{title}: test accuracy {:.4}", confusion.accuracy()),
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
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(width, height, rgb).context("confusion buffer has the wrong size")?;
    with_temp_path(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

fn truncate_label(s: &str) -> String {
    if s.chars().count() <= 20 { s.to_string() } else { format!("{}…", s.chars().take(19).collect::<String>()) }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    rows: &[EpochRecord],
    what: &str,
    values: fn(&EpochRecord) -> (f64, f64),
    is_accuracy: bool,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing curves: {e}");
    let last = rows.last().map_or(1, |r| r.epoch).max(2) as f64;
    let (lo, hi) = if is_accuracy {
        let min = rows.iter().flat_map(|r| [values(r).0, values(r).1]).fold(1.0, f64::min);
        ((min - 0.05).clamp(0.0, 0.9), 1.0)
    } else {
        let max = rows.iter().flat_map(|r| [values(r).0, values(r).1]).filter(|v| v.is_finite()).fold(0.0, f64::max);
        (0.0, (max * 1.1).max(1e-3))
    };
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
    for (epoch, phase) in phase_starts(rows) {
        let x = epoch as f64 - 0.5;
        let marker = RGBColor(40, 160, 60);
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(x, lo), (x, hi)], marker.stroke_width(2))))
            .map_err(err)?
            .label(format!("start {phase}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], marker.stroke_width(2)));
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
        write_curves(&path, "test", &rows).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // The marker's green appears in the picture.
        assert!(img.pixels().any(|p| p.0 == [40, 160, 60]));
    }

    #[test]
    fn confusion_png_shades_cells_by_row_share() {
        let classes: Vec<String> = vec!["cat".into(), "dog".into()];
        let c = Confusion::new(&classes, &[0, 0, 0, 1], &[0, 0, 0, 0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        write_confusion(&path, "t", &c).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // A full row share is the darkest blue; an empty cell the lightest.
        assert!(img.pixels().any(|p| p.0 == [8, 48, 107]));
        assert!(img.pixels().any(|p| p.0 == [247, 251, 255]));
    }
}
