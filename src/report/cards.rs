//! A run's card on the report page: when and by which runner it was made, its files, its
//! figures (click to enlarge), its best weights' per-class validation metrics and the
//! validation images they predicted worst; and the page's own style and script.

use std::fmt::Write as _;
use std::path::Path;

use super::compare::{Predicted, predictions};
use super::{RunEntry, href, html_escape};
use crate::record::confusion::Confusion;
use crate::record::run_dir::RunDir;

/// The worst-predicted validation images a card shows.
const GALLERY: usize = 8;

/// The validation predictions as a confusion matrix over the run's classes (predictions
/// naming a class the run does not have are left out), for its per-class scores.
fn confusion(classes: &[String], predicted: &[&Predicted]) -> Confusion {
    let index = |name: &str| classes.iter().position(|c| c == name).map(|i| i as i64);
    let (truth, guess): (Vec<i64>, Vec<i64>) =
        predicted.iter().filter_map(|p| Some((index(&p.label)?, index(&p.predicted)?))).unzip();
    Confusion::new(classes, &truth, &guess)
}

/// The card's validation part: per-class metrics and the worst-predicted images (by the
/// probability the best weights gave the true class), or why there are none.
fn validation(r: &RunEntry, out: &Path, sections: &mut String) {
    let all = match predictions(r) {
        Ok(all) => all,
        Err(why) => {
            let _ = writeln!(sections, "<p class=\"note\">No validation predictions: {}</p>", html_escape(&why));
            return;
        }
    };
    let rows: Vec<(&String, &Predicted)> = all.iter().collect();
    let predicted: Vec<&Predicted> = rows.iter().map(|(_, p)| *p).collect();
    let _ = writeln!(
        sections,
        "<table class=\"sortable per-class\">\n<caption>Validation, best weights, per class</caption>\n\
         <thead><tr><th>class</th><th>images</th><th>precision</th><th>recall</th><th>F1</th></tr></thead>\n<tbody>"
    );
    for c in confusion(&r.summary.classes, &predicted).scores() {
        let _ = writeln!(
            sections,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            html_escape(&c.class),
            c.support,
            c.precision,
            c.recall,
            c.f1
        );
    }
    let _ = writeln!(sections, "</tbody></table>");
    let mut worst = rows;
    worst.sort_by(|a, b| a.1.p_true.total_cmp(&b.1.p_true).then_with(|| a.0.cmp(b.0)));
    let root = r.summary.data_root.as_deref().map(Path::new);
    let _ = writeln!(sections, "<div class=\"gallery\"><p>Worst-predicted validation images</p>");
    for (path, p) in worst.into_iter().take(GALLERY) {
        let caption = format!("{path}: {} → {} (p = {:.2} for {})", p.label, p.predicted, p.p_true, p.label);
        let image = match root {
            Some(root) => {
                format!("<img class=\"zoom\" src=\"{}\" alt=\"{}\">", href(out, &root.join(path)), html_escape(path))
            }
            None => String::new(),
        };
        let _ = writeln!(sections, "<figure>{image}<figcaption>{}</figcaption></figure>", html_escape(&caption));
    }
    let _ = writeln!(sections, "</div>");
}

/// A run's card in the section `section_id`, headed by its id and `label`.
pub(super) fn card(r: &RunEntry, section_id: &str, label: &str, out: &Path, sections: &mut String) {
    let s = &r.summary;
    let _ = writeln!(
        sections,
        "<div class=\"run\" id=\"{section_id}-{id}\">\n<h3>{id} <small>{}</small></h3>",
        html_escape(label),
        id = html_escape(&s.run_id),
    );
    let made = [
        s.started.as_deref().map(|t| format!("started {t}")),
        Some(format!("runner {}", s.runner_version)),
        s.runner_commit.as_deref().map(|c| format!("commit {c}")),
    ];
    let made: Vec<String> = made.into_iter().flatten().collect();
    let _ = writeln!(sections, "<p class=\"made\">{}</p>", html_escape(&made.join(" · ")));
    if let Some(error) = &s.error {
        let _ = writeln!(sections, "<p class=\"error\">{}</p>", html_escape(error));
    }
    if let Some(c) = &s.calibration {
        let _ = writeln!(
            sections,
            "<p>Calibration: temperature {:.3} fitted on {} validation images; NLL {:.4} → {:.4}, \
             ECE {:.4} → {:.4}.</p>",
            c.temperature, c.images, c.nll_before, c.nll_after, c.ece_before, c.ece_after
        );
    }
    let mut links = vec![];
    for file in [
        RunDir::CONFIG,
        RunDir::METRICS_CSV,
        RunDir::SUMMARY,
        RunDir::LOG,
        RunDir::VAL_PREDICTIONS,
        RunDir::TEST_METRICS,
        RunDir::BEST,
    ] {
        if r.dir.file(file).exists() {
            links.push(format!("<a href=\"{}\">{file}</a>", href(out, &r.dir.file(file))));
        }
    }
    let _ = writeln!(sections, "<p>{}</p>", links.join(" · "));
    let figures = [
        (RunDir::CURVES, "learning curves"),
        (RunDir::VAL_CONFUSION_PNG, "validation confusion matrix"),
        (RunDir::CONFUSION_PNG, "test confusion matrix"),
        (RunDir::RELIABILITY_PNG, "reliability diagram"),
    ];
    for (file, alt) in figures {
        if r.dir.file(file).exists() {
            let _ = writeln!(
                sections,
                "<img class=\"thumb zoom\" src=\"{}\" alt=\"{} {alt}\" title=\"click to enlarge\">",
                href(out, &r.dir.file(file)),
                html_escape(&s.run_id),
            );
        }
    }
    validation(r, out, sections);
    let _ = writeln!(sections, "</div>");
}

pub(super) const STYLE: &str = "body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
table.sortable th { cursor: pointer; user-select: none; }
th[data-order=asc]::after { content: ' ▲'; }
th[data-order=desc]::after { content: ' ▼'; }
input.filter { margin-top: 0.5em; padding: 0.2em 0.4em; width: 20em; }
td.failed, td.diverged, p.error { color: #b00; }
p.made, p.note { color: #666; font-size: 0.9em; }
caption { text-align: left; color: #444; padding-bottom: 0.3em; }
.plots img { max-width: 48%; margin-right: 1%; vertical-align: top; }
.run { border-top: 1px solid #ddd; padding-top: 0.5em; }
img.thumb { width: 32%; min-width: 360px; margin: 0.3em 0.6em 0.3em 0; border: 1px solid #eee; vertical-align: top; }
.gallery figure { display: inline-block; width: 140px; margin: 0.3em; vertical-align: top; font-size: 0.8em; }
.gallery img { width: 140px; height: 140px; object-fit: contain; border: 1px solid #eee; }
img.zoom { cursor: zoom-in; }
img.zoomed { position: fixed; top: 2vh; left: 2vw; width: 96vw; height: 96vh; max-width: none; object-fit: contain;
  background: #fff; z-index: 10; cursor: zoom-out; box-shadow: 0 0 0 100vmax rgba(0, 0, 0, 0.6); }
";

/// The page's script: every `table.sortable` sorts by a column when its header is clicked
/// (numbers as numbers, blanks last; a second click reverses) and gets a filter box that
/// keeps the rows containing its text; a click on an image with class `zoom` enlarges it to
/// the window, and another click puts it back.
pub(super) const SCRIPT: &str = r#"(function () {
  function key(row, i) {
    var text = row.cells[i] ? row.cells[i].textContent.trim() : '';
    var number = parseFloat(text);
    return { blank: text === '', number: isNaN(number) ? null : number, text: text };
  }
  function compare(a, b) {
    if (a.number !== null && b.number !== null) return a.number - b.number;
    return a.text.localeCompare(b.text);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var filter = document.createElement('input');
    filter.type = 'search';
    filter.className = 'filter';
    filter.placeholder = 'filter rows';
    table.parentNode.insertBefore(filter, table);
    filter.addEventListener('input', function () {
      var wanted = filter.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.style.display = row.textContent.toLowerCase().indexOf(wanted) >= 0 ? '' : 'none';
      });
    });
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, i) {
      th.addEventListener('click', function () {
        var ascending = th.dataset.order !== 'asc';
        Array.prototype.forEach.call(heads, function (h) { delete h.dataset.order; });
        th.dataset.order = ascending ? 'asc' : 'desc';
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a, i), y = key(b, i);
          if (x.blank !== y.blank) return x.blank ? 1 : -1;
          var c = compare(x, y);
          return ascending ? c : -c;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.addEventListener('click', function (event) {
    if (event.target.matches('img.zoom')) {
      event.preventDefault();
      event.target.classList.toggle('zoomed');
    }
  });
})();
"#;
