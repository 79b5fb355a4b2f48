//! Helpers shared by the integration tests (each test file that uses them has `mod common;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The demo manifest's text with its relative paths (stream, reference, ONNX files) made absolute,
/// so that a copy works from any folder.
pub fn demo_manifest_text() -> String {
    let demo = root().join("demo");
    let text = std::fs::read_to_string(demo.join("manifest.toml")).unwrap();
    ["stream = \"", "reference = \"", "onnx = \""]
        .iter()
        .fold(text, |t, k| t.replace(k, &format!("{k}{}/", demo.display())))
}

/// [`demo_manifest_text`] after `edit`, written to `path`.
pub fn write_demo_manifest(path: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    std::fs::write(path, edit(demo_manifest_text())).unwrap();
    path.to_path_buf()
}

/// Wait for `child`, polling; kill it and fail the test naming `what` if it runs past `limit` (a
/// hang is a finding, not a stuck test).
pub fn wait_or_kill(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
