//! Module functions: grammars, tool-call parsing, system facts, the server, logging.

use super::*;

/// GBNF of a JSON schema (an unsupported keyword is a ValueError naming it).
#[pyfunction]
pub(crate) fn json_schema_to_gbnf(schema_json: &str) -> PyResult<String> {
    let v: serde_json::Value = serde_json::from_str(schema_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    llama_rs::json_schema::to_gbnf(&v).map_err(err)
}

/// Checks a GBNF grammar (ValueError with the reason when it does not parse).
#[pyfunction]
pub(crate) fn check_grammar(model: &Model, gbnf: &str) -> PyResult<()> {
    llama_rs::SamplerBuilder::new(&model.inner).grammar(Grammar::new(gbnf)).build().map(drop).map_err(err)
}

/// Tool calls in a model's output: `(content, [(name, arguments_json, id)])`.
#[pyfunction]
pub(crate) fn parse_tool_calls(text: &str) -> (String, Vec<(String, String, Option<String>)>) {
    let (content, calls) = llama_rs::parse_tool_calls(text);
    (content, calls.into_iter().map(|c| (c.function.name, c.function.arguments.to_string(), c.id)).collect())
}

/// Whether this build can offload layers to a GPU.
/// llama.cpp's system-info line, after the CPU backend in use (a wheel's CPU variant).
#[pyfunction]
pub(crate) fn system_info() -> String {
    llama_rs::backend::system_info()
}

#[pyfunction]
pub(crate) fn supports_gpu_offload() -> bool {
    llama_rs::Device::all().iter().any(|d| !matches!(d.kind, llama_rs::DeviceType::Cpu))
}

/// Runs llama-rs-server in this process until Ctrl-C (`python -m llama_rs.server`).
/// `argv` uses the server's own flags (llama-server's names); the address is printed
/// once the model is loaded.
#[pyfunction]
pub(crate) fn serve(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    let args = llama_rs_server::args::parse_from(std::iter::once("llama-rs-server".to_string()).chain(argv))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let server = llama_rs_server::Server::spawn(args).map_err(|e| PyOSError::new_err(e.to_string()))?;
    py.allow_threads(|| server.wait_ready(Duration::from_secs(3600))).map_err(PyRuntimeError::new_err)?;
    println!("llama_rs.server: listening on http://{}", server.addr());
    loop {
        py.allow_threads(|| std::thread::sleep(Duration::from_millis(100)));
        if let Err(e) = py.check_signals() {
            server.stop();
            return if e.is_instance_of::<PyKeyboardInterrupt>(py) { Ok(()) } else { Err(e) };
        }
    }
}

/// llama.cpp's (and llama-rs's) log records into Python's `logging`: a `log::Log` that
/// calls `llama_rs._log(level, target, message)`. Off until `set_log_level` turns it on
/// (`Llama(verbose=True)`), so a quiet process never calls into Python from a log line.
/// A record from another thread waits for the GIL: every native call that waits on
/// other threads releases it first (streams, engine shutdown, drops).
pub(crate) struct PyLogger;

pub(crate) static LOGGER: PyLogger = PyLogger;

impl log::Log for PyLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            _ => 10,
        };
        Python::with_gil(|py| {
            let sent = py
                .import("llama_rs")
                .and_then(|m| m.getattr("_log"))
                .and_then(|f| f.call1((level, r.target(), r.args().to_string())));
            if let Err(e) = sent {
                e.print(py);
            }
        });
    }
    fn flush(&self) {}
}

/// Forwards records at `level` (Python's numbers: 10 debug … 40 error) and above to
/// `logging`; 0 or above 40 turns forwarding off.
#[pyfunction]
pub(crate) fn set_log_level(level: u32) {
    log::set_max_level(match level {
        1..=10 => log::LevelFilter::Debug,
        11..=20 => log::LevelFilter::Info,
        21..=30 => log::LevelFilter::Warn,
        31..=40 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    });
}

/// Names of llama.cpp's built-in chat templates.
#[pyfunction]
pub(crate) fn builtin_templates() -> Vec<String> {
    ChatTemplate::builtin_names()
}
