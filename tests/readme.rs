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
        let args =
            rest.trim().strip_prefix("--").unwrap_or(rest).split_whitespace().map(str::to_string).collect();
        out.push((code.to_string(), args));
    }
    out
}

/// The main job (tract engines) prints the accuracy and savings that `jetlink bench mlink` recorded
/// for it (replay engines) in the committed `docs/bench/mlink.json`, row `main`: the figures the
/// README quotes are what `cargo run --release` does.
fn main_job_matches_its_bench_row(out: &str) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("docs/bench/mlink.json")).unwrap())
            .unwrap();
    let m = &json["main"];
    let pct = |v: &serde_json::Value| format!("{:.1}%", 100.0 * v.as_f64().unwrap());
    let acc = &m["accuracy"];
    let line = format!(
        "accuracy kept          {} overall, {} clean, {} drift",
        pct(&acc["overall"]),
        pct(&acc["clean"]),
        pct(&acc["drift"])
    );
    assert!(out.contains(&line), "the main job's summary lacks `{line}`:\n{out}");
    let saved = format!("executions saved       {} ", pct(&m["executions_saved"]));
    assert!(out.contains(&saved), "the main job's summary lacks `{saved}`:\n{out}");
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
        if args.is_empty() {
            main_job_matches_its_bench_row(&so);
        }
        println!(
            "$ {line}  ({:.1} s)\n{}",
            t.elapsed().as_secs_f64(),
            so.lines().take(4).collect::<Vec<_>>().join("\n")
        );
    }
}
