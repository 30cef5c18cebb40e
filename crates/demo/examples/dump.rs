//! Write the demo bundles to a directory: `cargo run -p demo --example dump -- OUT_DIR [SEED] [PATIENTS]`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "demo-out".to_string());
    let seed = args.next().map(|s| s.parse()).transpose()?.unwrap_or(42);
    let patients = args.next().map(|s| s.parse()).transpose()?.unwrap_or(25);
    let config = demo::DemoConfig { seed, patients };
    let mut elapsed = std::time::Duration::MAX;
    let mut data = demo::generate(&config);
    for _ in 0..5 {
        let t = Instant::now();
        let fresh = demo::generate(&config);
        elapsed = elapsed.min(t.elapsed());
        data = fresh;
    }
    let write = out != "-";
    if write {
        std::fs::create_dir_all(&out)?;
    }
    for (i, b) in data.bundles.iter().enumerate().filter(|_| write) {
        std::fs::write(format!("{out}/bundle-{i:03}.json"), serde_json::to_string_pretty(b)?)?;
    }
    let mut counts = std::collections::BTreeMap::new();
    for r in data.resources() {
        let t = r["resourceType"].as_str().unwrap_or("?").to_string();
        *counts.entry(t).or_insert(0usize) += 1;
    }
    println!("generated in {elapsed:?} (best of 5)");
    for (t, n) in &counts {
        println!("{t:>24} {n}");
    }
    println!("{:>24} {}", "total", counts.values().sum::<usize>());
    println!("{:#?}", data.accounts);
    Ok(())
}
