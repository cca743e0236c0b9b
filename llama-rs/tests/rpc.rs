//! RPC: a second process serves its CPU over loopback; a model loaded onto that RPC
//! device generates the same greedy text as a local CPU load.
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn loopback_rpc_matches_local_cpu() {
    let server = RpcServerChild::spawn("rpc_server_child");
    let endpoint = server.endpoint.clone();
    let devs = llama_rs::rpc::add_server(&endpoint).unwrap();
    assert_eq!(devs.len(), 1, "{devs:?}");
    assert_eq!(llama_rs::rpc::add_server(&endpoint).unwrap(), devs, "adding twice registers nothing new");

    let path = llama_testkit::default_model_path().unwrap();
    // The server's CPU backend does not repack weights; compare with a local load that
    // does not either, so both run the same kernels.
    // On this CPU only: a default load would also use every RPC device registered in this
    // process so far (the fuzzer's dead peers among them, tests run in parallel).
    let local =
        Model::load(&path, ModelParams::default().no_repack(true).gpu_layers(llama_rs::GpuLayers::Count(0))).unwrap();
    let remote = Model::load(&path, ModelParams::default().no_repack(true).devices(vec![devs[0].index])).unwrap();
    // The model parameter does the same as registering by hand.
    let via_param = Model::load(&path, ModelParams::default().no_repack(true).rpc_server(&endpoint)).unwrap();
    let plan = via_param.context(common::params()).unwrap().memory_breakdown().unwrap();
    assert!(plan.entries.iter().any(|e| e.device.as_deref() == Some(devs[0].name.as_str()) && e.model > 0), "{plan:?}");
    let bad = Model::load(&path, ModelParams::default().rpc_server(format!("127.0.0.1:{}", free_port())));
    assert!(matches!(bad, Err(Error::NoSuchDevice(_))), "{bad:?}");
    let a = common::greedy_text(&mut local.context(common::params()).unwrap(), common::PROMPT, 12);
    let b = common::greedy_text(&mut remote.context(common::params()).unwrap(), common::PROMPT, 12);
    assert_eq!(a, b);
    // (Without repacked kernels the greedy text drifts from the CLI's after a few words.)
    assert!(b.starts_with(" the capital of the"), "{b:?}");
    // Memory really lives on the RPC device.
    let plan = remote.context(common::params()).unwrap().memory_breakdown().unwrap();
    assert!(plan.entries.iter().any(|e| e.device.as_deref() == Some(devs[0].name.as_str()) && e.model > 0), "{plan:?}");
}

#[test]
fn unreachable_or_malformed_endpoints_are_errors() {
    let port = free_port(); // nothing listens there now
    assert!(matches!(llama_rs::rpc::add_server(&format!("127.0.0.1:{port}")), Err(Error::NoSuchDevice(_))));
    for bad in ["nohost", ":50052", "127.0.0.1:notaport", "127.0.0.1:99999"] {
        assert!(matches!(llama_rs::rpc::add_server(bad), Err(Error::InvalidParam { .. })), "{bad}");
    }
    assert!(matches!(llama_rs::rpc::serve("127.0.0.1:x", None, 1, &[]), Err(Error::InvalidParam { .. })));
}

/// Peers that are not RPC servers: one that accepts and closes, one that speaks HTTP, one
/// that accepts and never answers. ggml-rpc aborts on the first two and blocks forever
/// on the third; `add_server` returns an error for each, within the hello timeout.
#[test]
fn peers_that_are_not_rpc_servers_are_errors() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    type Behaviour = fn(std::net::TcpStream);
    let behaviours: [(&str, Behaviour); 3] = [
        ("closes", |s| drop(s)),
        ("http", |mut s| {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }),
        ("silent", |s| {
            std::thread::sleep(std::time::Duration::from_secs(8));
            drop(s)
        }),
    ];
    for (name, behave) in behaviours {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || behave(s));
            }
        });
        let start = std::time::Instant::now();
        let r = llama_rs::rpc::add_server(&endpoint);
        assert!(matches!(r, Err(Error::NoSuchDevice(_))), "{name}: {:?}", r.map(|d| d.len()));
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{name}: took {:?}", start.elapsed());
    }
}
