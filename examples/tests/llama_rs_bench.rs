//! `llama-rs-bench` end to end on the default model with tiny sizes: every output format
//! parses with one row per test, `compare` matches rows (also llama-bench's), the plot is
//! written, and bad flags are errors that name the flag.

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llama-rs-bench"))
        .args(["-t", "2", "-r", "1", "--quiet"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    // Bad flags exit with an error code; a signal is a crash whatever the flags.
    llama_testkit::child::assert_not_killed(&out, &format!("llama-rs-bench {args:?}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SWEEP: &[&str] = &["-p", "16", "-n", "4", "-d", "0,32", "-ctk", "f16,q8_0", "-fa", "1"];

#[test]
fn formats_have_one_row_per_test_and_a_stable_schema() {
    let (ok, csv, err) = bench(&[SWEEP, &["-o", "csv"]].concat());
    assert!(ok, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    for col in ["model_filename", "n_prompt", "n_gen", "n_depth", "type_k", "type_v", "avg_ts", "stddev_ts"] {
        assert!(header.contains(&col), "{col} missing from {header:?}");
    }
    // 2 tests (pp16, tg4) × 2 depths × 2 K types.
    assert_eq!(lines.len(), 1 + 8, "{csv}");
    let ts = header.iter().position(|c| *c == "avg_ts").unwrap();
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        let v: f64 = cells[ts].parse().unwrap();
        assert!(v > 0.0 && v.is_finite(), "{row}");
    }
    let (ok, json, err) = bench(&[SWEEP, &["-o", "json"]].concat());
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 8);
    let depths: Vec<u64> = rows.iter().map(|r| r["n_depth"].as_u64().unwrap()).collect();
    assert!(depths.contains(&0) && depths.contains(&32));
    assert!(rows.iter().any(|r| r["type_k"] == "q8_0") && rows.iter().all(|r| r["type_v"] == "f16"));
    let (ok, md, err) = bench(&["-p", "16", "-n", "0"]);
    assert!(ok, "{err}");
    assert!(md.starts_with("| model |") && md.contains("| pp16 |"), "{md}");
}

#[test]
fn compare_prints_ratios_for_matching_tests_and_the_plot_is_written() {
    let dir = std::env::temp_dir().join(format!("llama-rs-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, svg) = (dir.join("a.jsonl"), dir.join("b.jsonl"), dir.join("depth.svg"));
    let args = ["-p", "16", "-n", "4", "-d", "0,32", "-o", "jsonl"];
    let (ok, out, err) = bench(&[&args[..], &["--plot", svg.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    std::fs::write(&a, &out).unwrap();
    assert_eq!(out.lines().count(), 4);
    let (ok, out, err) = bench(&args);
    assert!(ok, "{err}");
    std::fs::write(&b, out).unwrap();
    let (ok, table, err) = bench(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("4 of 4 tests matched"), "{err}");
    let ratios: Vec<f64> =
        table.lines().skip(2).map(|l| l.trim_end_matches(" |").rsplit("| ").next().unwrap().parse().unwrap()).collect();
    assert_eq!(ratios.len(), 4, "{table}");
    // Timing noise of one tiny run each: only that the ratios are real numbers.
    assert!(ratios.iter().all(|r| r.is_finite() && *r > 0.0), "{table}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("tokens/s vs context depth"), "{}", &plot[..200.min(plot.len())]);
    // Unrelated files do not match: an error, not an empty table.
    let other = dir.join("other.jsonl");
    std::fs::write(&other, out_with_other_sizes(&a)).unwrap();
    let (ok, _, err) = bench(&["compare", a.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(!ok && err.contains("no test"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn out_with_other_sizes(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .replace("\"n_prompt\":16", "\"n_prompt\":17")
        .replace("\"n_gen\":4", "\"n_gen\":5")
}

#[test]
fn bad_flags_are_errors_that_name_them() {
    for (args, want) in [
        (&["-ctk", "q3_k"][..], "q3_k"),
        (&["-p", "8-2"][..], "-p 8-2"),
        (&["-p", "0", "-n", "0"][..], "nothing to run"),
        (&["-o", "xml", "-p", "8", "-n", "0"][..], "-o xml"),
        (&["-m", "/nonexistent.gguf"][..], "/nonexistent.gguf"),
    ] {
        let (ok, _, err) = bench(args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    }
    // Ranges as llama-bench has them.
    let (ok, csv, err) = bench(&["-p", "8-32*2", "-n", "0", "-o", "csv"]);
    assert!(ok, "{err}");
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}"); // 8, 16, 32
}
