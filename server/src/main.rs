//! `llama-rs-server`: llama-server's command line, llama-rs's engine.
//!
//!     cargo run --release -p llama-rs-server -- -m MODEL.gguf --port 8080

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = llama_rs_server::args::parse();
    let server = match llama_rs_server::Server::spawn(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("llama-rs-server: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("llama-rs-server: listening on http://{} (loading the model)", server.addr());
    if let Err(e) = server.wait_ready(std::time::Duration::from_secs(3600)) {
        eprintln!("llama-rs-server: {e}");
        std::process::exit(1);
    }
    eprintln!("llama-rs-server: model loaded; ready");
    // Ctrl-C or SIGTERM (a service manager's stop): stop taking requests, cancel running
    // ones, finish writing the disk cache's queued entries, exit.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    });
    eprintln!("llama-rs-server: stopping");
    server.stop();
}
