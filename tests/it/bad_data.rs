//! A dataset with every kind of bad file: the run completes, lists each bad
//! file with its reason, and trains on the rest; images in other modes
//! (grayscale, CMYK, RGBA, 16-bit, palette) are converted and used.

use std::path::Path;

use crate::common::*;

fn png_palette(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 40, 30);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(vec![255, 0, 0, 0, 255, 0, 0, 0, 255]);
    let mut w = enc.write_header().unwrap();
    let data: Vec<u8> = (0..40 * 30).map(|i| (i % 3) as u8).collect();
    w.write_image_data(&data).unwrap();
}

fn jpeg_cmyk(path: &Path) {
    let data: Vec<u8> = (0..48 * 32).flat_map(|i| [(i % 255) as u8, 40, 200, 10]).collect();
    let enc = jpeg_encoder::Encoder::new_file(path, 90).unwrap();
    enc.encode(&data, 48, 32, jpeg_encoder::ColorType::Cmyk).unwrap();
}

/// Writes the bad files and the odd-mode files into the class folders of `data`.
/// Returns the bad files' names.
fn spoil(data: &Path) -> Vec<&'static str> {
    let good_jpeg = std::fs::read(data.join("circle/0000.jpg")).unwrap();
    let mut good_png = vec![];
    image::RgbImage::from_pixel(50, 40, image::Rgb([9, 99, 199]))
        .write_to(&mut std::io::Cursor::new(&mut good_png), image::ImageFormat::Png)
        .unwrap();
    let c = data.join("circle");
    let r = data.join("cross");
    std::fs::write(c.join("truncated.jpg"), &good_jpeg[..good_jpeg.len() / 2]).unwrap();
    std::fs::write(r.join("truncated.png"), &good_png[..good_png.len() / 2]).unwrap();
    let mut corrupt = good_png.clone();
    for b in corrupt.iter_mut().skip(40).take(60) {
        *b ^= 0x5a;
    }
    std::fs::write(r.join("corrupt.png"), corrupt).unwrap();
    std::fs::write(c.join("empty.jpg"), b"").unwrap();
    std::fs::write(r.join("notes.png"), b"these are my notes, not a picture").unwrap();
    // Odd modes, all usable.
    image::GrayImage::from_pixel(30, 20, image::Luma([128])).save(c.join("gray.png")).unwrap();
    image::GrayImage::from_pixel(30, 20, image::Luma([77])).save(c.join("gray.jpg")).unwrap();
    image::RgbaImage::from_pixel(30, 20, image::Rgba([1, 2, 3, 100])).save(r.join("rgba.png")).unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(30, 20, image::Rgb([65535, 0, 30000]))
        .save(r.join("deep16.png"))
        .unwrap();
    png_palette(&c.join("palette.png"));
    jpeg_cmyk(&r.join("cmyk.jpg"));
    vec!["truncated.jpg", "truncated.png", "corrupt.png", "empty.jpg", "notes.png"]
}

#[test]
fn bad_files_are_reported_and_the_run_trains_on_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 8);
    let bad = spoil(&data);
    std::fs::write(dir.path().join("spec.toml"), tiny_spec(&data)).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml", "--out", "out"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: skipped 5 unreadable image files"), "{}", stderr(&o));
    let run = std::fs::read_dir(dir.path().join("out/tiny")).unwrap().next().unwrap().unwrap().path();

    let skipped = std::fs::read_to_string(run.join("skipped.csv")).unwrap();
    assert_eq!(skipped.lines().count(), 1 + bad.len(), "{skipped}");
    for name in &bad {
        let line = skipped.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} not listed: {skipped}"));
        let reason = line.split_once(',').unwrap().1;
        let expected = match *name {
            "empty.jpg" => "empty file",
            "notes.png" => "not an image (unknown format)",
            _ => "corrupt or truncated",
        };
        assert!(reason.contains(expected), "{name}: {reason}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["skipped_files"], 5);
    assert_eq!(summary["status"], "completed");
    // The manifest lists every file found, the unusable ones too: 16 shapes, 6 odd modes, 5 bad.
    let manifest = std::fs::read_to_string(run.join("manifest.csv")).unwrap();
    assert_eq!(manifest.lines().count(), 1 + 16 + 6 + 5, "{manifest}");
    for name in ["gray.png", "gray.jpg", "rgba.png", "deep16.png", "palette.png", "cmyk.jpg"] {
        assert!(manifest.contains(name), "{name} missing from the manifest");
    }
    // Everything else was used, the odd modes included.
    assert_eq!(summary["train_images"].as_u64().unwrap() + summary["val_images"].as_u64().unwrap(), 22);

    // `runner data check` shows the same, without training.
    let o = runner(dir.path(), &["data", "check", data.to_str().unwrap(), "--image-size", "32"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("5 unusable files"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("total")
            && l.split_whitespace().skip(1).map(|n| n.parse::<u64>().unwrap()).sum::<u64>() == 22),
        "{out}"
    );

    // data.strict turns a skip into an error, before anything is written.
    let strict = tiny_spec(&data).replace("batch_size = 8", "batch_size = 8\nstrict = true");
    std::fs::write(dir.path().join("strict.toml"), strict).unwrap();
    let o = runner(dir.path(), &["run", "strict.toml", "--out", "strict-out"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: data.strict is set and 5 files cannot be used: "), "{}", stderr(&o));
    assert!(!dir.path().join("strict-out").exists());
}

#[test]
fn a_class_with_no_usable_image_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 4);
    let bees = data.join("bees");
    std::fs::create_dir_all(&bees).unwrap();
    for i in 0..3 {
        std::fs::write(bees.join(format!("{i}.jpg")), b"").unwrap();
    }
    std::fs::write(dir.path().join("spec.toml"), tiny_spec(&data)).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml", "--out", "out"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: class `bees` has no usable training image (3 files skipped in all)\n");
    assert!(!dir.path().join("out").exists());
}

/// `data.labels`: the classes come from a CSV table, its split column splits, a bad row is
/// skipped with its line, and the manifest records the table's labels.
#[test]
fn a_labels_table_names_the_classes_and_its_bad_rows_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 8);
    let mut csv = String::from("path,label,split\n");
    for (folder, label) in [("circle", "round"), ("cross", "pointy")] {
        for i in 0..8 {
            let split = if i < 6 { "train" } else { "val" };
            csv.push_str(&format!("{folder}/{i:04}.jpg,{label},{split}\n"));
        }
    }
    csv.push_str("circle/missing.jpg,round,train\n");
    std::fs::write(data.join("labels.csv"), &csv).unwrap();
    let spec = tiny_spec(&data).replace("batch_size = 8\n", "batch_size = 8\nlabels = \"labels.csv\"\n");
    std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml", "--out", "out"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: skipped 1 "), "{}", stderr(&o));
    let run = only_run(&dir.path().join("out/tiny"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["classes"], serde_json::json!(["pointy", "round"]));
    assert_eq!((summary["train_images"].as_u64(), summary["val_images"].as_u64()), (Some(12), Some(4)));
    let skipped = std::fs::read_to_string(run.join("skipped.csv")).unwrap();
    assert!(skipped.contains("circle/missing.jpg,labels.csv line 18: circle/missing.jpg: no such file"), "{skipped}");
    let manifest = std::fs::read_to_string(run.join("manifest.csv")).unwrap();
    assert!(manifest.lines().any(|l| l.starts_with("cross/0007.jpg,pointy,val,")), "{manifest}");
}
