//! The `chat` binary on the real chat model (SmolLM2): one-shot answers, stdin prompts,
//! and a piped interactive session whose /save + /reset + /load continues exactly where
//! it was.

use std::io::Write;
use std::process::{Command, Stdio};

fn chat(args: &[&str], stdin: &str) -> (String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--temp", "0", "-t", "2"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "chat {}: {e}", llama_testkit::child::exit_reason(&out.status));
    (o, e)
}

#[test]
fn one_shot_answers_are_deterministic_and_read_stdin() {
    let (a, stats) = chat(&["-p", "Name a river.", "-n", "16"], "");
    let (b, _) = chat(&["-p", "-", "-n", "16"], "Name a river.\n");
    assert!(!a.trim().is_empty());
    assert_eq!(a, b);
    assert!(stats.contains("16 tokens") || stats.contains("tokens,"), "{stats}");
}

#[test]
fn a_saved_conversation_continues_after_reset_and_load() {
    let dir = std::env::temp_dir().join(format!("llama-rs-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("state");
    let f = f.to_str().unwrap();
    let (plain, _) = chat(&["-n", "12"], "Hi, who are you?\nWhat can you do?\n");
    let (resumed, log) =
        chat(&["-n", "12"], &format!("Hi, who are you?\n/save {f}\n/reset\n/stats\n/load {f}\nWhat can you do?\n"));
    assert_eq!(plain, resumed, "{log}");
    assert!(log.contains("0 tokens in the cache"), "{log}");
    assert!(log.contains("loaded 2 messages"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}
