//! Running one model across machines with ggml's RPC backend (llama.cpp's `--rpc` and
//! `rpc-server`). Needs the `rpc` feature (on by default).
//!
//! Endpoints are parsed, connected to and greeted (the protocol's hello, with a timeout)
//! here first. After that, llama-rs builds ggml-rpc with a patch
//! (`vendor/patches/0002-ggml-rpc-failing-server-is-an-error.patch`): a server that dies,
//! closes the connection, answers something malformed (a device count of 4 billion, a
//! size of `u64::MAX`) or stops answering for `GGML_RPC_TIMEOUT` seconds (default 600)
//! fails the call that needed it — `add_server`, a model load, a decode, reading outputs
//! — with an error ([`crate::Error::BackendFailed`] from a decode),
//! where upstream ggml-rpc aborts the process or blocks for ever. A context whose server
//! failed keeps failing: make a new one (on another server) to go on.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use llama_sys as sys;

use crate::backend;
use crate::device::Device;
use crate::error::{Error, Result};

/// ggml-rpc's wire protocol, as far as the hello goes (ggml-rpc.cpp, transport.h of the
/// pinned source): command byte 14, a u64 size and a 24-byte capabilities block; the
/// answer is a u64 size and major/minor/patch/padding plus 24 capability bytes.
const RPC_CMD_HELLO: u8 = 14;
const RPC_CONN_CAPS_SIZE: usize = 24;
const RPC_PROTO_MAJOR_VERSION: u8 = 7;
/// How long a server may take to answer the hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

type StartServerFn =
    unsafe extern "C" fn(*const std::ffi::c_char, *const std::ffi::c_char, usize, usize, *mut sys::ggml_backend_dev_t);

/// A function of the RPC backend through the registry (`ggml_backend_reg_get_proc_address`):
/// in a `cpu-all` build the RPC backend is a module whose functions are not linked.
fn rpc_fn(name: &std::ffi::CStr) -> Result<*mut std::ffi::c_void> {
    backend::init();
    // SAFETY: registry lookups with NUL-terminated names; NULL results are checked.
    let f = unsafe {
        let reg = sys::ggml_backend_reg_by_name(c"RPC".as_ptr());
        if reg.is_null() {
            return Err(Error::NoSuchDevice("this build has no RPC backend".into()));
        }
        sys::ggml_backend_reg_get_proc_address(reg, name.as_ptr())
    };
    if f.is_null() {
        return Err(Error::NoSuchDevice(format!("the RPC backend has no {name:?}")));
    }
    Ok(f)
}

/// The protocol's hello, done here with timeouts: ggml-rpc blocks forever on a server
/// that accepts and never answers, and aborts the process on one that closes the
/// connection or speaks another protocol (`RPC_STATUS_ASSERT`).
fn hello(addr: &std::net::SocketAddr, endpoint: &str) -> Result<()> {
    use std::io::{Read, Write};
    let fail = |why: String| Error::NoSuchDevice(format!("{endpoint} is not a usable ggml RPC server: {why}"));
    let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(3)).map_err(|e| fail(e.to_string()))?;
    s.set_read_timeout(Some(HELLO_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(HELLO_TIMEOUT)))
        .map_err(|e| fail(e.to_string()))?;
    let mut req = vec![RPC_CMD_HELLO];
    req.extend_from_slice(&(RPC_CONN_CAPS_SIZE as u64).to_le_bytes());
    req.extend_from_slice(&[0u8; RPC_CONN_CAPS_SIZE]);
    s.write_all(&req).map_err(|e| fail(format!("sending the hello: {e}")))?;
    let mut size = [0u8; 8];
    s.read_exact(&mut size).map_err(|e| fail(format!("no hello answer within {HELLO_TIMEOUT:?} ({e})")))?;
    let want = 4 + RPC_CONN_CAPS_SIZE;
    if u64::from_le_bytes(size) != want as u64 {
        return Err(fail("the answer is not an RPC hello (another protocol or version?)".into()));
    }
    let mut rsp = vec![0u8; want];
    s.read_exact(&mut rsp).map_err(|e| fail(format!("truncated hello answer ({e})")))?;
    if rsp[0] != RPC_PROTO_MAJOR_VERSION {
        return Err(fail(format!(
            "protocol {}.{}.{}, this build speaks {RPC_PROTO_MAJOR_VERSION}.x",
            rsp[0], rsp[1], rsp[2]
        )));
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("", format!("RPC endpoint {endpoint:?}: {why} (expected host:port)"));
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    port.parse::<u16>().map_err(|_| bad("bad port"))?;
    let addrs: Vec<_> = endpoint.to_socket_addrs().map_err(|e| bad(&e.to_string()))?.collect();
    let Some(addr) = addrs.iter().find(|a| TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok()) else {
        return Err(Error::NoSuchDevice(format!("no RPC server answers at {endpoint}")));
    };
    hello(addr, endpoint)
}

/// Registers the devices of the RPC server at `endpoint` (`host:port`) and returns them.
/// They then appear in [`Device::all`] and are used by model loads like local GPUs.
///
/// ```no_run
/// let devices = llama_rs::rpc::add_server("192.168.1.20:50052")?;
/// let params = llama_rs::ModelParams::default().devices(devices.iter().map(|d| d.index).collect::<Vec<_>>());
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn add_server(endpoint: &str) -> Result<Vec<Device>> {
    backend::init();
    // ggml-rpc keeps one connection per endpoint for the process lifetime, and a server
    // serves one client at a time: greeting an endpoint this process already uses would
    // wait behind our own connection. Such an endpoint was checked when it was added.
    static ADDED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let known = ADDED.lock().map(|a| a.iter().any(|e| e == endpoint)).unwrap_or(false);
    if !known {
        check_endpoint(endpoint)?;
    }
    let c = crate::ffi::c_string(endpoint, endpoint)?;
    let before: Vec<String> = Device::all().into_iter().map(|d| d.name).collect();
    let add_server = rpc_fn(c"ggml_backend_rpc_add_server")?;
    // add_server is idempotent per endpoint (llama.cpp keeps a map) and returns NULL if
    // the server reports no devices; a server answered on `c` just now.
    // SAFETY: the registry returned ggml-rpc's add_server, of type AddServerFn (ggml-rpc.h).
    // Called through the shim's exception barrier: the server is asked for its devices
    // (a malformed count, a connection that fails, throw).
    let reg = unsafe { sys::llama_rs_call_reg_fn(add_server, c.as_ptr()) };
    if reg.is_null() {
        let why = crate::error::last_exception();
        return Err(Error::NoSuchDevice(if why.is_empty() {
            format!("the RPC server at {endpoint} has no devices")
        } else {
            format!("the RPC server at {endpoint}: {why}")
        }));
    }
    // SAFETY: `reg` is a valid registry entry; ggml keeps it for the process lifetime.
    let n = unsafe { sys::ggml_backend_reg_dev_count(reg) };
    if n == 0 {
        return Err(Error::NoSuchDevice(format!("the RPC server at {endpoint} has no devices")));
    }
    // SAFETY: index 0 < n (checked just above).
    let first = unsafe { sys::ggml_backend_reg_dev_get(reg, 0) };
    // SAFETY: a valid device of `reg`; its name is a NUL-terminated string ggml owns.
    let first_name = unsafe { crate::ffi::owned_string(sys::ggml_backend_dev_name(first)) };
    // Registering a reg twice would duplicate devices, so only new ones are registered.
    if !before.contains(&first_name) {
        // SAFETY: a valid, not yet registered backend registry.
        unsafe { sys::ggml_backend_register(reg) };
    }
    if !known {
        if let Ok(mut a) = ADDED.lock() {
            a.push(endpoint.to_string());
        }
    }
    Ok(Device::all().into_iter().filter(|d| d.description == endpoint && d.name.starts_with("RPC")).collect())
}

/// Serves this machine's devices (indices into [`Device::all`]; empty = all) over RPC
/// at `endpoint` until the process ends. `cache_dir` enables llama.cpp's tensor cache.
pub fn serve(endpoint: &str, cache_dir: Option<&Path>, n_threads: usize, devices: &[usize]) -> Result<()> {
    backend::init();
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| Error::invalid("", format!("RPC endpoint {endpoint:?}: expected host:port")))?;
    port.parse::<u16>().map_err(|_| Error::invalid("", format!("RPC endpoint {endpoint:?}: bad port")))?;
    // Fail here, not with an abort inside ggml, if the address cannot be bound.
    std::net::TcpListener::bind((host, port.parse::<u16>().unwrap()))
        .map_err(|e| Error::invalid("", format!("cannot listen on {endpoint}: {e}")))?;
    let mut devs: Vec<sys::ggml_backend_dev_t> = Vec::new();
    let idx: Vec<usize> = if devices.is_empty() {
        Device::all().iter().filter(|d| !d.name.starts_with("RPC")).map(|d| d.index).collect()
    } else {
        devices.to_vec()
    };
    for i in idx {
        devs.push(Device::raw_by_index(i)?);
    }
    let c = crate::ffi::c_string(endpoint, endpoint)?;
    let cache = cache_dir.map(crate::ffi::path_cstring).transpose()?;
    let start_server = rpc_fn(c"ggml_backend_rpc_start_server")?;
    // SAFETY: valid strings and device pointers for the duration of the (blocking) call;
    // the registry returned ggml-rpc's `ggml_backend_rpc_start_server`, whose C signature
    // StartServerFn spells out (ggml-rpc.h).
    unsafe {
        std::mem::transmute::<*mut std::ffi::c_void, StartServerFn>(start_server)(
            c.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            n_threads.max(1),
            devs.len(),
            devs.as_mut_ptr(),
        )
    };
    Ok(())
}
