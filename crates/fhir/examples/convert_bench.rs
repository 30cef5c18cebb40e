//! Conversion speed: every bundle of a folder of DSTU2 or STU3 Synthea exports (`.json.gz`),
//! decompressed into memory first, then parsed, converted to R4 and serialized, on one thread,
//! `ROUNDS` times. Prints one JSON line per version with the median rate.
//!
//! Usage: convert_bench FIXTURES_DIR [ROUNDS]  (FIXTURES_DIR holds dstu2-synthea and stu3-synthea)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark program: a failure is the answer

use std::io::Read as _;
use std::time::Instant;

use fhir::convert::{convert_bundle, Report, Version};

// The allocator the `portico` binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: convert_bench FIXTURES_DIR [ROUNDS]"));
    let rounds: usize = args.next().map_or(7, |r| r.parse().expect("ROUNDS is a number"));
    for (version, folder) in [(Version::Dstu2, "dstu2-synthea"), (Version::Stu3, "stu3-synthea")] {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(folder))
            .expect("fixture folder")
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
            .collect();
        files.sort();
        let texts: Vec<String> = files
            .iter()
            .map(|p| {
                let mut s = String::new();
                flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()).read_to_string(&mut s).unwrap();
                s
            })
            .collect();
        let bytes: usize = texts.iter().map(String::len).sum();
        let mut times = Vec::new();
        let mut resources = 0usize;
        let mut out_bytes = 0usize;
        for _ in 0..rounds {
            resources = 0;
            out_bytes = 0;
            let start = Instant::now();
            for text in &texts {
                let bundle: serde_json::Value = serde_json::from_str(text).unwrap();
                let mut report = Report::default();
                let converted = convert_bundle(version, bundle, &mut report).unwrap();
                resources += converted["entry"].as_array().map_or(0, Vec::len);
                out_bytes += serde_json::to_string(&converted).unwrap().len();
            }
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{}",
            serde_json::json!({
                "version": version.code(), "bundles": texts.len(), "resources": resources,
                "input_mb": bytes as f64 / 1e6, "output_mb": out_bytes as f64 / 1e6, "rounds": rounds,
                "median_s": median, "min_s": times[0], "max_s": times[times.len() - 1],
                "resources_per_s": (resources as f64 / median).round(),
            })
        );
    }
}
