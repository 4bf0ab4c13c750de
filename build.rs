//! Link flags of the `emr-ray-operator` binary (its bins only: the tests and the other packages
//! link as before).
//!
//! Packed relative relocations (`-z pack-relative-relocs`, `DT_RELR`): the loader reads a
//! position-independent binary's whole relocation table at start, and those pages stay in its
//! RSS; as `.rela.dyn` the table is 0.87 MB, packed a few KiB (idle RSS 15.4 -> 14.5 MiB, see
//! the README). The loader must know `DT_RELR`, which glibc does from 2.36 (Debian 12, the
//! image's): the flag is used only for a native linux-gnu build whose glibc, the one the binary
//! is linked against, is 2.36 or later.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    if target == host && target.ends_with("-linux-gnu") && glibc_at_least((2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the build host's glibc (`getconf GNU_LIBC_VERSION`: `glibc 2.36`) is at least
/// `want`; unknown is no.
fn glibc_at_least(want: (u32, u32)) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}
