//! `runner bench ...`

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Subcommand;
use runner::Result;

#[derive(Subcommand)]
pub enum Command {
    /// Decode + resize (shorter side to 256) + center crop (224) of every image under DIR, on one core.
    Decode {
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Decode { dir, repeat } => {
            let files: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
                .sort_by_file_name()
                .into_iter()
                .filter_map(|e| e.ok())
                .map(|e| e.into_path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_string_lossy().to_lowercase().as_str()))
                })
                .collect();
            if files.is_empty() {
                return Err(anyhow!("no images under {}", dir.display()).into());
            }
            let mut best = 0.0f64;
            for _ in 0..repeat.max(1) {
                let start = std::time::Instant::now();
                for f in &files {
                    // The stored square is 256 (= 224 / 0.875); the 224 crop is a view at batch time.
                    runner::data::decode(f, runner::data::resize_side(224)).map_err(anyhow::Error::from)?;
                }
                best = best.max(files.len() as f64 / start.elapsed().as_secs_f64());
            }
            println!("runner: {} images, {best:.1} images/s on one core (best of {repeat})", files.len());
        }
    }
    Ok(())
}
