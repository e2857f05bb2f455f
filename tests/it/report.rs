//! `runner report` over a few runs: the summary table, the leaderboards, the
//! comparison plots, and an HTML page that headless Chromium renders with every
//! image loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{only_run, runner, shapes, stderr, stdout, tiny_spec};

/// Two phases (2 + 1 epochs), a test split (so a confusion matrix), and `grid`.
fn spec(name: &str, source: &Path, grid: &str) -> String {
    let spec = tiny_spec(source)
        .replace("name = \"tiny\"", &format!("name = \"{name}\""))
        .replace("batch_size = 8", "batch_size = 8\nsplit = [0.6, 0.2, 0.2]")
        .replacen("epochs = 1", "epochs = 2", 1);
    format!("{spec}{grid}")
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Headless Chromium with the flags a closed network needs; `profile` is a fresh user data dir.
fn headless(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn the_report_tables_plots_and_page() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let source = shapes(root, 3, 10);
    std::fs::create_dir_all(root.join("specs")).unwrap();
    let grid = "\n[grid]\n\"phases.1.optimizer.lr_factor\" = [0.1, 0.5]\n";
    std::fs::write(root.join("specs/lrs.toml"), spec("lrs", &source, grid)).unwrap();
    std::fs::write(root.join("specs/single.toml"), spec("single", &source, "")).unwrap();
    let o = runner(root, &["sweep", "specs", "--out", "reports/runs", "--quiet", "--no-report"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let o = runner(root, &["report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("report of 3 runs (2 experiment(s))"), "{}", stdout(&o));
    let reports = root.join("reports");

    // summary.csv: one row per run, the grid value as a column, ranked within each experiment.
    let csv = std::fs::read_to_string(reports.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in ["experiment", "run_id", "phases.1.optimizer.lr_factor", "status", "best_val_acc", "best_epoch"] {
        assert!(header.contains(&col), "no {col} in {header:?}");
    }
    for col in ["test_acc", "wall_s"] {
        assert!(header.contains(&col), "no {col} in {header:?}");
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3);
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let lrs: Vec<&Vec<&str>> = rows.iter().filter(|r| r[col("experiment")] == "lrs").collect();
    assert_eq!(lrs.len(), 2);
    let mut factors: Vec<&str> = lrs.iter().map(|r| r[col("phases.1.optimizer.lr_factor")]).collect();
    factors.sort();
    assert_eq!(factors, ["0.1", "0.5"]);
    let acc = |r: &Vec<&str>| r[col("best_val_acc")].parse::<f64>().unwrap();
    assert!(acc(lrs[0]) >= acc(lrs[1]), "ranked best first");
    for r in &rows {
        assert_eq!(r[col("status")], "completed");
        assert!(r[col("test_acc")].parse::<f64>().is_ok());
    }
    // The single run does not vary: its grid cell is empty.
    let single = rows.iter().find(|r| r[col("experiment")] == "single").unwrap();
    assert_eq!(single[col("phases.1.optimizer.lr_factor")], "");
    let parquet = runner::record::table::read_metrics(&reports.join("summary.parquet")).unwrap();
    assert_eq!(parquet.height(), 3);
    assert_eq!(parquet.get_column_names().len(), header.len());

    // Leaderboards and plots.
    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(md.contains("## lrs") && md.contains("## single"), "{md}");
    assert!(md.contains("| rank | run id | phases.1.optimizer.lr_factor | status |"), "{md}");
    for experiment in ["lrs", "single"] {
        for plot in ["val_acc", "val_loss", "lr", "best"] {
            let img = image::open(reports.join("plots").join(format!("{experiment}-{plot}.png"))).unwrap();
            assert!(img.width() > 300, "{experiment}-{plot}");
        }
    }

    // The page: every image it shows loads in headless Chromium.
    let html = std::fs::read_to_string(reports.join("index.html")).unwrap();
    let images = html.matches("<img ").count();
    // Four plots per experiment; per run its curves and two confusion matrices, and a gallery
    // of its 8 worst-predicted validation images (6 val images each here: all of them).
    let val_images =
        crate::common::summary_json(&only_run(&reports.join("runs/single")))["val_images"].as_u64().unwrap();
    assert_eq!(images, 2 * 4 + 3 * (3 + val_images.min(8) as usize), "{html}");
    assert!(html.contains("config.toml") && html.contains("val_predictions.csv"));
    assert_eq!(html.matches("<caption>Validation, best weights, per class</caption>").count(), 3);
    assert_eq!(html.matches("Worst-predicted validation images").count(), 3);
    assert!(html.contains("runner 0.1.0") && html.contains("started 20"), "when and by which runner");
    assert!(!html.contains("&quot;"), "values without their TOML quotes");
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI needs chromium (scripts/test.sh installs it)");
        eprintln!("skipping the browser check: no chromium here (apt-get install chromium)");
        return;
    };
    // A copy of the page beside it (same relative links) that lists each image's load state.
    let check = reports.join("index.check.html");
    // It also clicks the first leaderboard's "run id" header twice (the rows sort up, then
    // down) and types the first id into the table's filter box (one row stays).
    let probe = "<script>window.addEventListener('load', () => { const r = [...document.images].map(i => \
                 ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})); \
                 const t = document.querySelector('table.sortable'); const head = t.tHead.rows[0].cells; \
                 const col = [...head].findIndex(h => h.textContent === 'run id'); \
                 const ids = () => [...t.tBodies[0].rows].map(row => row.cells[col].textContent); \
                 const before = ids(); head[col].click(); const up = ids(); head[col].click(); const down = ids(); \
                 const f = t.previousElementSibling; f.value = up[0]; f.dispatchEvent(new Event('input')); \
                 const shown = [...t.tBodies[0].rows].filter(row => row.style.display !== 'none').length; \
                 const p = document.createElement('pre'); p.id = 'image-check'; \
                 p.textContent = JSON.stringify({images: r, before, up, down, shown, filter: f.tagName}); \
                 document.body.appendChild(p); });</script>";
    std::fs::write(&check, html.replace("</body>", &format!("{probe}\n</body>"))).unwrap();
    let o = headless(&browser, &root.join("profile-1"))
        .args(["--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("file://{}", check.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let dom = stdout(&o);
    let start = dom.find("<pre id=\"image-check\">").expect("the probe ran") + "<pre id=\"image-check\">".len();
    let json = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    let got: serde_json::Value = serde_json::from_str(&json.replace("&amp;", "&")).unwrap();
    let loaded = got["images"].as_array().unwrap();
    assert_eq!(loaded.len(), images);
    let broken: Vec<&serde_json::Value> = loaded.iter().filter(|i| i["ok"] != true).collect();
    assert!(broken.is_empty(), "broken images: {broken:?}");
    // The table sorted when its header was clicked: up, then down; the filter kept one row.
    let ids =
        |k: &str| -> Vec<String> { got[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect() };
    let mut sorted = ids("before");
    sorted.sort();
    assert_eq!(ids("up"), sorted, "{got}");
    sorted.reverse();
    assert_eq!(ids("down"), sorted, "{got}");
    assert_eq!((got["shown"].as_u64(), got["filter"].as_str()), (Some(1), Some("INPUT")), "{got}");

    // And a screenshot of the page itself, which is a real picture.
    let shot = root.join("report.png");
    let o = headless(&browser, &root.join("profile-2"))
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=1280,2400", "--virtual-time-budget=10000"])
        .arg(format!("file://{}", reports.join("index.html").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1280, 2400));
    // The plots' blue bars are on the screen.
    assert!(img.pixels().filter(|p| p.0 == [31, 119, 180]).count() > 500, "no bar chart in the screenshot");
    if let Ok(dir) = std::env::var("SCREENSHOT_DIR") {
        std::fs::copy(&shot, Path::new(&dir).join("report.png")).unwrap();
    }
}

#[test]
fn report_without_runs_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = runner(tmp.path(), &["report"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("reports/runs: no runs folder"), "{}", stderr(&o));
    std::fs::create_dir_all(tmp.path().join("reports/runs/x/y")).unwrap();
    let o = runner(tmp.path(), &["report"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no runs under"), "{}", stderr(&o));
}
