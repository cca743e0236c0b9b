//! `chat` driven through a pseudo-terminal, as a person uses it: the line editor's prompt,
//! a question and its streamed answer with the stats line, `/save`, `/reset`, `/load`,
//! `/stats`, a second question, and Ctrl-D to leave.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pseudo-terminal pair (master, slave).
fn openpty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new file descriptors into the pointers; the name, termios
    // and window size arguments may be null.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty failed");
    // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
    unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

struct Term {
    master: std::fs::File,
    seen: Arc<Mutex<String>>,
    child: std::process::Child,
}

impl Term {
    /// Waits until the terminal has shown `what` `times` times in all.
    fn wait_for(&mut self, what: &str, times: usize) -> String {
        let start = Instant::now();
        loop {
            let s = self.seen.lock().unwrap().clone();
            if s.matches(what).count() >= times {
                return s;
            }
            // A child that died (a crash in the model code) fails the test now, with its
            // signal, instead of after the timeout.
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200)); // the reader's last bytes
                let s = self.seen.lock().unwrap().clone();
                panic!("chat {} while waiting for {what:?}; screen:\n{s}", llama_testkit::child::exit_reason(&st));
            }
            assert!(start.elapsed() < Duration::from_secs(120), "no {what:?} (×{times}) after 120 s; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn type_line(&mut self, line: &str) {
        // A terminal sends Enter as a carriage return.
        self.master.write_all(format!("{line}\r").as_bytes()).unwrap();
    }
}

#[test]
fn an_interactive_session_through_a_terminal() {
    let (master, slave) = openpty();
    let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let child = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--temp", "0", "-t", "2", "-n", "24"]) // the default chat model
        .stdin(io(&slave))
        .stdout(io(&slave))
        .stderr(io(&slave))
        .spawn()
        .unwrap();
    drop(slave);
    let seen = Arc::new(Mutex::new(String::new()));
    let (mut reader, s2) = (master.try_clone().unwrap(), seen.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with an error (EIO) once the child has closed the terminal.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut t = Term { master, seen, child };
    t.wait_for("> ", 1); // the line editor's prompt: stdin is a terminal
    t.type_line("Name one color.");
    let first = t.wait_for(" t/s, TTFT ", 1);
    let state = std::env::temp_dir().join(format!("llama-rs-chat-pty-{}.state", std::process::id()));
    let state_s = state.to_str().unwrap().to_string();
    t.type_line(&format!("/save {state_s}"));
    t.wait_for("(saved 2 messages", 1); // the question and the answer
    t.type_line("/reset");
    t.wait_for("(conversation cleared)", 1);
    t.type_line(&format!("/load {state_s}"));
    t.wait_for("(loaded 2 messages", 1);
    t.type_line("/stats");
    let s = t.wait_for(" tokens in the cache of ", 1);
    assert!(s.contains("1 answers"), "{s}");
    t.type_line("And another one?");
    t.wait_for(" t/s, TTFT ", 2);
    t.master.write_all(b"\x04").unwrap(); // Ctrl-D at the prompt
    let start = Instant::now();
    let status = loop {
        if let Some(st) = t.child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "chat did not exit on Ctrl-D");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chat {}", llama_testkit::child::exit_reason(&status));
    // The answer was streamed onto the terminal between the question and the stats line.
    // The load's progress bar may still be redrawing after the question was typed: its
    // escape sequences (ESC [ ...) and lines go first.
    // The question may be echoed twice (by the terminal while the model was loading, then
    // by the line editor): the answer follows the last echo.
    let plain = strip_ansi(&first).replace('\r', "");
    let after = plain.rsplit("Name one color.").next().unwrap();
    let answer: String =
        after.split("\n[").next().unwrap().lines().filter(|l| !l.trim_start().starts_with("loading ")).collect();
    assert!(answer.trim().len() > 1, "{first}");
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(format!("{state_s}.json"));
}

/// The text without terminal escape sequences (`ESC [ params final-byte`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
