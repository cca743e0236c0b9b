//! Every environment variable the build reads goes through here, so each one gets a
//! `rerun-if-env-changed` line. Nothing else from the environment reaches cmake.

pub fn var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A boolean switch: `1/on/true/yes` or `0/off/false/no`; anything else is an error.
pub fn flag(name: &str) -> Result<Option<bool>, String> {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("1" | "on" | "true" | "yes") => Ok(Some(true)),
        Some("0" | "off" | "false" | "no") => Ok(Some(false)),
        Some(other) => Err(format!("{name}={other:?}: expected 1/0, on/off, true/false")),
    }
}

/// Cargo's view of the target (never `cfg!`, which describes the build host).
pub fn cargo(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}
