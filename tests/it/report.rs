//! `runner report` over a few runs: the summary table, the leaderboards, the
//! comparison plots, and an HTML page that headless Chromium renders with every
//! image loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{runner, shapes, stderr, stdout, tiny_spec};

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
    for png in ["lrs-val_acc.png", "lrs-best.png", "single-val_acc.png", "single-best.png"] {
        let img = image::open(reports.join("plots").join(png)).unwrap();
        assert!(img.width() > 300, "{png}");
    }

    // The page: every image it shows loads in headless Chromium.
    let html = std::fs::read_to_string(reports.join("index.html")).unwrap();
    let images = html.matches("<img ").count();
    // Two comparison plots per experiment, and per run its curves and confusion matrix.
    assert_eq!(images, 2 * 2 + 3 * 2, "{html}");
    assert!(html.contains("config.toml"));
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI needs chromium (scripts/test.sh installs it)");
        eprintln!("skipping the browser check: no chromium here (apt-get install chromium)");
        return;
    };
    // A copy of the page beside it (same relative links) that lists each image's load state.
    let check = reports.join("index.check.html");
    let probe = "<script>window.addEventListener('load', () => { const r = [...document.images].map(i => \
                 ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})); const p = \
                 document.createElement('pre'); p.id = 'image-check'; p.textContent = JSON.stringify(r); \
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
    let loaded: Vec<serde_json::Value> = serde_json::from_str(&json.replace("&amp;", "&")).unwrap();
    assert_eq!(loaded.len(), images);
    let broken: Vec<&serde_json::Value> = loaded.iter().filter(|i| i["ok"] != true).collect();
    assert!(broken.is_empty(), "broken images: {broken:?}");

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

#[test]
fn seed_replicates_are_grouped_into_configurations_with_their_spread() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let source = shapes(root, 2, 6);
    std::fs::create_dir_all(root.join("specs")).unwrap();
    let grid = "\n[grid]\nseed = [1, 2, 3]\n\"phases.1.optimizer.lr_factor\" = [0.1, 0.5]\n";
    std::fs::write(root.join("specs/seeds.toml"), spec("seeds", &source, grid)).unwrap();
    let o = runner(root, &["sweep", "specs", "--out", "reports/runs", "--quiet", "--no-report"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let o = runner(root, &["report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reports = root.join("reports");

    // configs.csv: 2 configurations of 3 seeds each, the mean and spread of their runs.
    let csv = std::fs::read_to_string(reports.join("configs.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "experiment",
            "phases.1.optimizer.lr_factor",
            "n",
            "best_val_acc_mean",
            "best_val_acc_sd",
            "test_acc_mean",
            "test_acc_sd",
            "seeds",
            "run_ids"
        ],
        "{csv}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let summary = std::fs::read_to_string(reports.join("summary.csv")).unwrap();
    for row in &rows {
        assert_eq!(row[2], "3", "n = 3: {csv}");
        assert_eq!(row[7], "1 2 3", "{csv}");
        // The mean and sd are those of the three runs' best val_acc in summary.csv.
        let accs: Vec<f64> = row[8]
            .split(' ')
            .map(|id| {
                let line = summary.lines().find(|l| l.contains(id)).unwrap();
                let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
                let col = header.iter().position(|h| *h == "best_val_acc").unwrap();
                line.split(',').nth(col).unwrap().parse().unwrap()
            })
            .collect();
        let mean = accs.iter().sum::<f64>() / 3.0;
        let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!((row[3].parse::<f64>().unwrap() - mean).abs() < 1e-9, "{csv}");
        assert!((row[4].parse::<f64>().unwrap() - sd).abs() < 1e-9, "{csv}");
    }
    let factors: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert!(factors.contains(&"0.1") && factors.contains(&"0.5"), "{csv}");
    let means: Vec<f64> = rows.iter().map(|r| r[3].parse().unwrap()).collect();
    assert!(means[0] >= means[1], "ranked by mean: {csv}");

    // The leaderboard groups them too, and the band plot is drawn and linked.
    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(md.contains("### seeds: configurations (seed replicates grouped)"), "{md}");
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |")).collect();
    assert!(table.iter().filter(|l| l.contains(" | 3 | ")).count() >= 2, "two rows with n = 3: {md}");
    assert!(md.contains("plots/seeds-configs.png"), "{md}");
    let png = std::fs::read(reports.join("plots/seeds-configs.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a drawn plot, {} bytes", png.len());
    let html = std::fs::read_to_string(reports.join("index.html")).unwrap();
    assert!(html.contains("Configurations (seed replicates grouped)") && html.contains("seeds-configs.png"));
}
