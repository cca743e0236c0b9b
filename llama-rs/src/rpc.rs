//! Running one model across machines with ggml's RPC backend (llama.cpp's `--rpc` and
//! `rpc-server`). Needs the `rpc` feature (on by default).
//!
//! llama.cpp aborts the process when an RPC server cannot be reached, so endpoints are
//! parsed and connected to here first. A server that dies in the middle of a
//! computation still aborts the client inside llama.cpp: run RPC servers you control.

use std::ffi::CString;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use llama_sys as sys;

use crate::backend;
use crate::device::Device;
use crate::error::{Error, Result};

fn check_endpoint(endpoint: &str) -> Result<()> {
    let bad = |why: &str| Error::InvalidParam(format!("RPC endpoint {endpoint:?}: {why} (expected host:port)"));
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    port.parse::<u16>().map_err(|_| bad("bad port"))?;
    let addrs: Vec<_> = endpoint.to_socket_addrs().map_err(|e| bad(&e.to_string()))?.collect();
    if !addrs.iter().any(|a| TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok()) {
        return Err(Error::NoSuchDevice(format!("no RPC server answers at {endpoint}")));
    }
    Ok(())
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
    check_endpoint(endpoint)?;
    let c = CString::new(endpoint).map_err(|_| Error::Nul(endpoint.into()))?;
    let before: Vec<String> = Device::all().into_iter().map(|d| d.name).collect();
    // SAFETY: `c` is a valid endpoint string and a server answered on it just now;
    // add_server is idempotent per endpoint (llama.cpp keeps a map) and returns NULL if
    // the server reports no devices.
    let reg = unsafe { sys::ggml_backend_rpc_add_server(c.as_ptr()) };
    if reg.is_null() {
        return Err(Error::NoSuchDevice(format!("the RPC server at {endpoint} has no devices")));
    }
    // SAFETY: `reg` is a valid registry entry; ggml keeps it for the process lifetime.
    // Registering a reg twice would duplicate devices, so only new ones are registered.
    let n = unsafe { sys::ggml_backend_reg_dev_count(reg) };
    // SAFETY: index < count.
    let first = unsafe { sys::ggml_backend_reg_dev_get(reg, 0) };
    // SAFETY: a valid device of `reg`.
    let first_name = unsafe { std::ffi::CStr::from_ptr(sys::ggml_backend_dev_name(first)) }.to_string_lossy().into_owned();
    if n > 0 && !before.contains(&first_name) {
        // SAFETY: a valid, not yet registered backend registry.
        unsafe { sys::ggml_backend_register(reg) };
    }
    Ok(Device::all().into_iter().filter(|d| d.description == endpoint && d.name.starts_with("RPC")).collect())
}

/// Serves this machine's devices (indices into [`Device::all`]; empty = all) over RPC
/// at `endpoint` until the process ends. `cache_dir` enables llama.cpp's tensor cache.
pub fn serve(endpoint: &str, cache_dir: Option<&Path>, n_threads: usize, devices: &[usize]) -> Result<()> {
    backend::init();
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| Error::InvalidParam(format!("RPC endpoint {endpoint:?}: expected host:port")))?;
    port.parse::<u16>().map_err(|_| Error::InvalidParam(format!("RPC endpoint {endpoint:?}: bad port")))?;
    // Fail here, not with an abort inside ggml, if the address cannot be bound.
    std::net::TcpListener::bind((host, port.parse::<u16>().unwrap()))
        .map_err(|e| Error::InvalidParam(format!("cannot listen on {endpoint}: {e}")))?;
    let mut devs: Vec<sys::ggml_backend_dev_t> = Vec::new();
    let idx: Vec<usize> = if devices.is_empty() {
        Device::all().iter().filter(|d| !d.name.starts_with("RPC")).map(|d| d.index).collect()
    } else {
        devices.to_vec()
    };
    for i in idx {
        devs.push(Device::raw_by_index(i)?);
    }
    let c = CString::new(endpoint).map_err(|_| Error::Nul(endpoint.into()))?;
    let cache = cache_dir.map(crate::model::path_cstring).transpose()?;
    // SAFETY: valid strings and device pointers for the duration of the (blocking) call.
    unsafe {
        sys::ggml_backend_rpc_start_server(
            c.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            n_threads.max(1),
            devs.len(),
            devs.as_mut_ptr(),
        )
    };
    Ok(())
}
