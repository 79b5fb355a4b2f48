//! Every command README.md shows runs, on the committed files, as the README shows it: each
//! `cargo run --release [-- ARGS]` line of its code blocks is run as `jetlink [ARGS]` from the
//! repository root, in order, and must succeed. (`cargo test --release` is this test's own
//! command.) A stale artifact, a renamed flag or a removed command fails here instead of a user.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's commands: the arguments after `cargo run --release --` (none for the main job).
fn commands(md: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for line in md.lines() {
        let Some(code) = line.strip_prefix("    ") else { continue };
        let code = code.split(" #").next().unwrap().trim();
        let Some(rest) = code.strip_prefix("cargo run --release") else { continue };
        let args = rest.trim().strip_prefix("--").unwrap_or(rest).split_whitespace().map(str::to_string).collect();
        out.push((code.to_string(), args));
    }
    out
}

#[test]
fn every_readme_command_runs() {
    let md = std::fs::read_to_string(root().join("README.md")).unwrap();
    let cmds = commands(&md);
    assert!(cmds.len() >= 5, "{cmds:?}");
    assert!(cmds.iter().any(|(_, a)| a.is_empty()), "the main job's command is in the README");
    assert!(md.contains("\n    cargo test --release"), "the test command is in the README");
    for (line, args) in cmds {
        let t = std::time::Instant::now();
        let o = Command::new(env!("CARGO_BIN_EXE_jetlink")).args(&args).current_dir(root()).output().unwrap();
        let (so, se) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "README command `{line}` failed ({}):\n{so}\n{se}", o.status);
        println!("$ {line}  ({:.1} s)\n{}", t.elapsed().as_secs_f64(), so.lines().take(4).collect::<Vec<_>>().join("\n"));
    }
}
