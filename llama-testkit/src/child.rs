//! Tests that drive a child process (chat over a pty, harness, bench, an RPC server)
//! must fail within moments when the child dies, naming how it died — not after their
//! full timeout, and not with a bare "failed".
//!
//! ```
//! let mut child = std::process::Command::new("sh").args(["-c", "kill -SEGV $$"]).spawn().unwrap();
//! let st = child.wait().unwrap();
//! assert_eq!(llama_testkit::child::exit_reason(&st), "killed by signal 11 (SIGSEGV)");
//! let mut child = std::process::Command::new("sh").args(["-c", "exit 0"]).spawn().unwrap();
//! std::thread::sleep(std::time::Duration::from_millis(200));
//! let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
//!     llama_testkit::child::assert_alive(&mut child, "sh")
//! }));
//! assert!(err.is_err());
//! ```

use std::process::{Child, ExitStatus};

/// "exited with code 3", "killed by signal 11 (SIGSEGV)".
pub fn exit_reason(st: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = st.signal() {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match st.code() {
        Some(c) => format!("exited with code {c}"),
        None => format!("ended: {st:?}"),
    }
}

/// Panics, naming how it ended, if `child` is no longer running. Call it in every wait
/// loop that polls for the child's output.
pub fn assert_alive(child: &mut Child, what: &str) {
    if let Ok(Some(st)) = child.try_wait() {
        panic!("{what} {} while the test waited for it", exit_reason(&st));
    }
}

/// Panics, naming the signal and showing stderr, if the finished child was killed by a
/// signal (a crash). An exit code — a refused flag, say — is left to the caller.
pub fn assert_not_killed(out: &std::process::Output, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.signal().is_none(),
            "{what} {}: {}",
            exit_reason(&out.status),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An RPC server in a child process: the running test binary again, filtered to a test
/// that serves when `LLAMA_RS_TEST_RPC_SERVE` names an endpoint (each test binary that
/// uses this has one such test, `child_test`). Killed when dropped.
pub struct RpcServerChild {
    child: Child,
    /// `127.0.0.1:PORT` it listens on.
    pub endpoint: String,
}

/// The variable that tells the child test which endpoint to serve.
pub const RPC_SERVE_ENV: &str = "LLAMA_RS_TEST_RPC_SERVE";

impl RpcServerChild {
    /// Starts the child and waits (up to 30 s) until it accepts connections.
    pub fn spawn(child_test: &str) -> RpcServerChild {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([child_test, "--exact", "--nocapture", "--test-threads", "1"])
            .env(RPC_SERVE_ENV, &endpoint)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut s = RpcServerChild { child, endpoint };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(&s.endpoint).is_err() {
            assert_alive(&mut s.child, "the rpc server child");
            assert!(start.elapsed().as_secs() < 30, "rpc server did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        s
    }

    /// The child process (to check it is alive).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for RpcServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
