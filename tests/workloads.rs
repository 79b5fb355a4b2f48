//! Every committed workload's own commands, run on the committed files: `record` reproduces the
//! committed reference (spot frames, tract), `build` reproduces the committed bundle byte for byte
//! (so a bundle in an old format, or one built from other data or rules, fails here), and `bench
//! mlink` reproduces the committed sweep's rows. The main demo's `run` is in tests/readme.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetlink-workloads-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn jetlink(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_jetlink")).args(args).current_dir(root()).output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "jetlink {args:?} failed ({}):\n{so}\n{se}", o.status);
    so.into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `build` on the committed manifest and reference writes the committed bundle, byte for byte.
fn build_reproduces(manifest: &str, committed: &str, dir: &Path) {
    let out = dir.join("rebuilt.bundle");
    jetlink(&["build", "--manifest", manifest, "--key", "demo/keys/demo-insecure.key", "--out", s(&out)]);
    let (a, b) = (std::fs::read(&out).unwrap(), std::fs::read(root().join(committed)).unwrap());
    assert!(
        a == b,
        "`jetlink build --manifest {manifest}` no longer writes the committed {committed} ({} bytes against {}): \
         rebuild it (tools/video/README.md, README.md)",
        a.len(),
        b.len()
    );
}

#[test]
fn the_video_workload_rebuilds_from_its_committed_files() {
    let dir = scratch("video");
    build_reproduces("demo-video/manifest.toml", "demo-video/video.bundle", &dir);

    // `record` with the real models (tract) gives the committed reference on the last two frames.
    let rec = dir.join("tail.jlr");
    jetlink(&[
        "record",
        "--manifest",
        "demo-video/manifest.toml",
        "--from",
        "498",
        "--to",
        "500",
        "--out",
        s(&rec),
    ]);
    let fresh = jetlink::recording::Recording::load(&rec).unwrap();
    let committed = jetlink::recording::Recording::load(&root().join("demo-video/reference.jlr.gz")).unwrap();
    assert_eq!(fresh.len(), 2);
    for r in 0..fresh.len() {
        let f = fresh.frames[r];
        let c =
            committed.row_of_frame(f).unwrap_or_else(|| panic!("the committed reference lacks frame {f}"));
        for (k, (x, y)) in fresh.row(r).iter().zip(committed.row(c)).enumerate() {
            assert!((x - y).abs() <= 1e-4, "frame {f}, value {k}: recorded {x}, committed {y}");
        }
    }

    // `bench mlink` reproduces the committed sweep's rows (replay engines: exactly).
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    jetlink(&[
        "bench",
        "mlink",
        "--manifest",
        "demo-video/manifest.toml",
        "--bundle",
        "demo-video/video.bundle",
        "--sim-model-budget",
        "24000000",
        "--policies",
        "refresh-4,interval-4,oracle-refresh-4",
        "--budgets",
        "100%",
        "--no-variants",
        "--out-dir",
        s(&dir),
    ]);
    let (fresh, committed) =
        (json(&dir.join("mlink.json")), json(&root().join("docs/bench/video/mlink.json")));
    let rows = fresh["results"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "the main row, then one row per policy at one budget");
    for row in rows {
        assert!(row["accuracy_tolerance"].is_object(), "the video workload declares score rules: {row}");
        let same = committed["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["method"] == row["method"] && c["budget_share"] == row["budget_share"])
            .unwrap_or_else(|| panic!("docs/bench/video/mlink.json has no row {}", row["method"]));
        for field in ["accuracy", "accuracy_tolerance", "executions_saved", "held_outputs", "command"] {
            assert_eq!(
                row[field], same[field],
                "{}: {field} differs from docs/bench/video/mlink.json",
                row["method"]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_bundle_rebuilds_from_its_committed_files() {
    let dir = scratch("demo");
    build_reproduces("demo/manifest.toml", "demo/demo.bundle", &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
