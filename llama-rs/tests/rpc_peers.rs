//! The RPC peer fuzzer, alone in its test binary: the peers it breaks stay registered as
//! devices for the life of the process, and a default model load uses every registered
//! device.
#![cfg(feature = "rpc")]
use llama_testkit::child::{RpcServerChild, RPC_SERVE_ENV};
use llama_testkit::fixtures as common;

use llama_rs::{Error, Model, ModelParams};

/// Runs only in the child process: serves until killed.
#[test]
fn rpc_server_child() {
    if let Ok(endpoint) = std::env::var(RPC_SERVE_ENV) {
        llama_rs::rpc::serve(&endpoint, None, 2, &[]).unwrap();
    }
}

/// What a misbehaving peer does to one command of the connection llama.cpp computes on.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Closes the connection instead of forwarding the command.
    Close,
    /// Never answers (the client's socket timeout must end the wait).
    Stall,
    /// Answers with a size prefix one larger than the reply.
    BadSize,
    /// Answers with every byte of the reply set to 0xFF (device count 4,294,967,295,
    /// sizes of u64::MAX, a garbage alignment and pointers).
    Garbage,
}

/// Commands whose reply the server sends (ggml-rpc.cpp's `rpc_serve_client`).
fn has_reply(cmd: u8) -> bool {
    matches!(cmd, 0 | 1 | 2 | 3 | 7 | 8 | 9 | 11 | 13 | 14 | 15)
}

/// A peer in front of a real RPC server: forwards every connection, and on the second one
/// (the first is llama-rs's own hello check) applies `fault` at command number `at`.
fn faulty_proxy(upstream: String, at: usize, fault: Fault) -> String {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (conn, client) in l.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&upstream) else { return };
            std::thread::spawn(move || {
                let mut n = 0;
                loop {
                    let mut head = [0u8; 9];
                    if client.read_exact(&mut head).is_err() {
                        return;
                    }
                    let size = u64::from_le_bytes(head[1..9].try_into().unwrap()) as usize;
                    let mut body = vec![0u8; size];
                    if client.read_exact(&mut body).is_err() {
                        return;
                    }
                    let faulty = conn >= 1 && n == at;
                    n += 1;
                    match fault {
                        Fault::Close if faulty => return,
                        Fault::Stall if faulty => {
                            std::thread::sleep(std::time::Duration::from_secs(30));
                            return;
                        }
                        _ => {}
                    }
                    if server.write_all(&head).and_then(|_| server.write_all(&body)).is_err() {
                        return;
                    }
                    if !has_reply(head[0]) {
                        continue;
                    }
                    let mut rsize = [0u8; 8];
                    if server.read_exact(&mut rsize).is_err() {
                        return;
                    }
                    let mut reply = vec![0u8; u64::from_le_bytes(rsize) as usize];
                    if server.read_exact(&mut reply).is_err() {
                        return;
                    }
                    match fault {
                        Fault::BadSize if faulty => rsize = (reply.len() as u64 + 1).to_le_bytes(),
                        Fault::Garbage if faulty => reply.fill(0xFF),
                        _ => {}
                    }
                    if client.write_all(&rsize).and_then(|_| client.write_all(&reply)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    endpoint
}

/// The RPC peer fuzzer: a real server behind a proxy that breaks the connection
/// llama.cpp computes on at a generated command, in a generated way. ggml-rpc aborted
/// the process on each of these (or blocked for ever on a stall); now every step —
/// registering the server, loading, creating a context, decoding, reading logits —
/// returns `Ok` or a typed error within the socket timeout, and the process goes on.
/// More cases: LLAMA_RS_RPC_FUZZ_CASES (default 12), seed LLAMA_RS_RPC_FUZZ_SEED.
#[test]
fn misbehaving_rpc_peers_are_errors_not_aborts() {
    // The client's socket timeout, read when ggml-rpc connects.
    std::env::set_var("GGML_RPC_TIMEOUT", "3");
    let cases: usize = std::env::var("LLAMA_RS_RPC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let mut seed: u64 = std::env::var("LLAMA_RS_RPC_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let mut rand = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let path = llama_testkit::default_model_path().unwrap();
    // Loaded before any RPC device exists (alone in this test binary: a default load
    // uses every registered device, and the fuzzer's peers die).
    let local = common::model();
    let toks = local.vocab().tokenize(common::PROMPT, true, false).unwrap();
    let faults = [Fault::Close, Fault::Stall, Fault::BadSize, Fault::Garbage];
    let (mut ok, mut failed) = (0, 0);
    for case in 0..cases {
        let fault = faults[case % faults.len()];
        // Early commands (hello, device count, sizes) densely, then anywhere in a load.
        let at = if case < 8 { case / 2 * 2 + rand(2) } else { rand(1200) };
        let server = RpcServerChild::spawn("rpc_server_child");
        let endpoint = faulty_proxy(server.endpoint.clone(), at, fault);
        let start = std::time::Instant::now();
        let what = format!("case {case}: {fault:?} at command {at}");
        let r: Result<String, Error> = (|| {
            let devs = llama_rs::rpc::add_server(&endpoint)?;
            let m = Model::load(&path, ModelParams::default().no_repack(true).devices(vec![devs[0].index]))?;
            let mut ctx = m.context(common::params())?;
            let mut b = llama_rs::Batch::new(64, 1)?;
            for round in 0..3 {
                b.clear();
                b.add_sequence(&toks, 0, 0, true)?;
                ctx.clear_memory(true);
                ctx.decode(&mut b)?;
                let _ = ctx.logits(b.len() - 1)?;
                let _ = round;
            }
            Ok("decoded".into())
        })();
        assert!(start.elapsed().as_secs() < 60, "{what}: took {:?}", start.elapsed());
        eprintln!("{what}: {:?}", r.as_ref().map_err(|e| e.to_string()));
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                assert!(
                    matches!(
                        e,
                        Error::NoSuchDevice(_)
                            | Error::ModelLoad { .. }
                            | Error::ContextCreate
                            | Error::BackendFailed { .. }
                            | Error::Backend { .. }
                    ),
                    "{what}: {e:?}"
                );
            }
        }
    }
    // The fuzzer reached both sides: faults that broke a step, and faults past the end.
    assert!(failed > 0, "no case failed: the faults never hit ({ok} ok)");
    // The process still computes.
    let text = common::greedy_text(&mut local.context(common::params()).unwrap(), common::PROMPT, 4);
    assert!(!text.is_empty());
}
