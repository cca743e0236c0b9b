//! Serves this machine's devices to llama-rs / llama.cpp clients over RPC (ggml's
//! RPC server, like llama.cpp's `rpc-server`). Clients add it with
//! `llama_rs::rpc::add_server("host:port")` (or llama.cpp's `--rpc host:port`).
//!
//!     cargo run --release -p llama-examples --bin rpc-server -- --host 0.0.0.0 --port 50052
//!
//! The protocol has no authentication: listen on trusted networks only.

use clap::Parser;

#[derive(Parser)]
#[command(about = "ggml RPC server for llama-rs")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 50052)]
    port: u16,
    /// CPU threads for the CPU device.
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Cache received tensors here (faster reloads of the same model).
    #[arg(long)]
    cache: Option<std::path::PathBuf>,
    /// Device indices to serve (default: all local devices); see --list.
    #[arg(long, value_delimiter = ',')]
    device: Vec<usize>,
    /// List devices and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,llama_cpp=error")).init();
    let a = Args::parse();
    if a.list {
        for d in llama_rs::Device::all() {
            println!("{}: {} — {} ({:?}, {} MiB free)", d.index, d.name, d.description, d.kind, d.free >> 20);
        }
        return Ok(());
    }
    let threads = if a.threads == 0 { std::thread::available_parallelism().map_or(4, |n| n.get()) } else { a.threads };
    let endpoint = format!("{}:{}", a.host, a.port);
    eprintln!(
        "serving {} on {endpoint} ({threads} CPU threads)",
        if a.device.is_empty() { "all devices".to_string() } else { format!("devices {:?}", a.device) }
    );
    llama_rs::rpc::serve(&endpoint, a.cache.as_deref(), threads, &a.device)?;
    Ok(())
}
