//! `harness` end to end on the CPU with the default model: the JSON report places every
//! layer, has planned and actual memory, both completions and the benchmark rounds; the
//! text report has its sections; a bad -ngl is an error naming it.

use std::process::Command;

fn harness(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["-t", "2", "--max-tokens", "6", "--benchmark", "2", "--ctx", "512"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    // Bad flags exit with an error code; a signal is a crash whatever the flags.
    llama_testkit::child::assert_not_killed(&out, &format!("harness {args:?}"));
    out
}

#[test]
fn the_json_report_places_every_layer_and_times_the_rounds() {
    let out = harness(&["--json", "--batch", "64", "--flash-attn"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n_layer = r["model"]["n_layer"].as_u64().unwrap();
    let layers = r["layers"].as_array().unwrap();
    // llama.cpp says where each layer and the output layer went (here: all on the CPU,
    // the only device).
    assert_eq!(layers.len() as u64, n_layer + 1, "{:?}", r["layers"]);
    assert_eq!(layers.iter().filter(|l| l["output"] == true).count(), 1);
    assert!(layers.iter().all(|l| l["device"] == "CPU"), "{layers:?}");
    assert!(r["devices"].as_array().unwrap().iter().any(|d| d["name"] == "CPU"));
    let weights = |k: &str| r[k].as_array().unwrap().iter().map(|e| e["weights_mib"].as_f64().unwrap()).sum::<f64>();
    assert!(weights("memory_planned") > 100.0 && weights("memory_actual") > 100.0);
    // The mapped file also keeps the weights that were repacked for the CPU (counted once
    // in the dry run): within 10 %.
    let (p, a) = (weights("memory_planned"), weights("memory_actual"));
    assert!((p - a).abs() < 0.1 * a, "planned {p} MiB, actual {a} MiB");
    assert!(!r["completion"]["text"].as_str().unwrap().is_empty());
    let rounds = r["benchmark"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    assert!(rounds.iter().all(|x| x["tokens"] == 6 && x["tokens_per_s"].as_f64().unwrap() > 0.0), "{rounds:?}");
    assert!(r["benchmark"]["tokens_per_s_mean"].as_f64().unwrap() > 0.0);
    assert_eq!(r["settings"]["batch"], 64);
}

#[test]
fn the_text_report_has_every_section_and_bad_flags_are_errors() {
    let out = harness(&["-ngl", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for section in [
        "== devices",
        "== model",
        "== placement",
        "layers   0–",
        "== memory",
        "== load",
        "== completion",
        "== benchmark",
        "mean ",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    let out = harness(&["-ngl", "many"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("-ngl many"));
    let out = harness(&["-m", "/nonexistent.gguf"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
}
