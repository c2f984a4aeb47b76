//! Node scripts of tests/browser/ (real clients and a real Express app), for the tests that
//! drive them: where they live, the skip switch, and the check that their npm packages are
//! installed.
//!
//! The packages are installed by `scripts/install-browser-deps.sh` (`make test` runs it). A
//! test fails when they are missing, saying how to install them; `SSE_SIDECAR_SKIP_BROWSER=1`
//! skips it instead, with a note that cannot be missed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// tests/browser/, where the node scripts and their node_modules live.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

pub const INSTALL_HINT: &str =
    "run scripts/install-browser-deps.sh (make test runs it), or set SSE_SIDECAR_SKIP_BROWSER=1 to skip";

/// True when SSE_SIDECAR_SKIP_BROWSER=1: prints a note that cannot be missed.
pub fn skipped(test: &str) -> bool {
    if std::env::var("SSE_SIDECAR_SKIP_BROWSER").as_deref() != Ok("1") {
        return false;
    }
    // Straight to the process's stderr: libtest's capture would hide an eprintln! of a test
    // that passes.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! SKIPPED {test}: SSE_SIDECAR_SKIP_BROWSER=1.\n\
         !! The real-client end-to-end checks (Node scripts in tests/browser/) did NOT run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    true
}

/// Fails unless node and the npm packages `packages` of tests/browser/ are installed.
pub fn require_packages(packages: &[&str]) {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not installed ({node:?}): {INSTALL_HINT}"
    );
    for pkg in packages {
        let p = node_dir()
            .join("node_modules")
            .join(pkg)
            .join("package.json");
        assert!(p.is_file(), "{} is missing: {INSTALL_HINT}", p.display());
    }
}
