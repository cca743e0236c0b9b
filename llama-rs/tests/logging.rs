//! llama.cpp's log lines reach the `log` crate (a process-wide logger: own binary).
use llama_testkit::fixtures as common;
use std::sync::Mutex;

static LINES: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

struct Capture;
impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        LINES.lock().unwrap().push((r.level(), r.target().to_string(), r.args().to_string()));
    }
    fn flush(&self) {}
}

#[test]
fn llama_cpp_logs_go_to_the_log_crate() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let m = common::model();
    let _ctx = m.context(common::params()).unwrap();
    let lines = LINES.lock().unwrap();
    assert!(lines.iter().all(|(_, target, _)| target == "llama_cpp"));
    assert!(lines.iter().any(|(_, _, msg)| msg.contains("gemma3")), "model load logged");
    assert!(lines.iter().all(|(_, _, msg)| !msg.ends_with('\n')));
}
