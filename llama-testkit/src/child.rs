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
