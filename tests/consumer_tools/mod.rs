//! The real consumers of `deploy/` and the chart, built from their Go modules by
//! `tests/tools/tools.sh` into `.cache/bin` (cached): `promtool`, `kube-state-metrics`, and
//! `consumers` (Argo CD's health Lua in gopher-lua, and cli-utils kstatus).
//!
//! Use from an integration test file with `mod consumer_tools;`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// `.cache/bin/<name>`, after `tests/tools/tools.sh build` (once per test process; cheap when
/// everything is up to date, a cold build takes minutes).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = crate::common::repo_root().join("tests/tools/tools.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("build")
            .status()
            .unwrap_or_else(|e| panic!("running {} build: {e}", script.display()));
        assert!(status.success(), "{} build failed", script.display());
    });
    crate::common::repo_root().join(".cache/bin").join(name)
}

/// What a consumer said about one object.
#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    pub kind: String,
    pub name: String,
    pub status: String,
    pub message: String,
    #[serde(default)]
    pub error: Option<String>,
}

fn run_consumers(args: &[&str], objects: &[Value]) -> Vec<Verdict> {
    let mut child = Command::new(bin("consumers"))
        .args(args)
        .current_dir(crate::common::repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning consumers");
    let input = serde_json::to_vec(objects).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().expect("consumers runs");
    let verdicts: Vec<Verdict> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "consumers {args:?}: unreadable output ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(verdicts.len(), objects.len(), "one verdict per object");
    verdicts
}

/// Argo CD health of each object, from `script` run in gopher-lua with Argo CD's libraries.
/// A script error is in [`Verdict::error`].
pub fn argocd_health(script: &Path, objects: &[Value]) -> Vec<Verdict> {
    run_consumers(&["argocd-health", script.to_str().unwrap()], objects)
}

/// kstatus (`Current`, `InProgress`, `Failed`, ...) of each object.
pub fn kstatus(objects: &[Value]) -> Vec<Verdict> {
    run_consumers(&["kstatus"], objects)
}

/// Runs `promtool ARGS` in the repository root.
pub fn promtool(args: &[&str]) -> Output {
    Command::new(bin("promtool"))
        .args(args)
        .current_dir(crate::common::repo_root())
        .output()
        .expect("running promtool")
}

/// Panics with promtool's output unless it succeeded.
pub fn assert_promtool_ok(args: &[&str]) -> String {
    let out = promtool(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}
