//! Compiles the board files in `boards/` into Rust (`$OUT_DIR/boards.rs`) and selects the board
//! named by `JETLINK_BOARD` (default `host-sim`). A bad board file fails the build with its name and key.

#[path = "src/board/schema.rs"]
mod schema;

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = root.join("boards");
    println!("cargo:rerun-if-changed=boards");
    println!("cargo:rerun-if-changed=src/board/schema.rs");
    println!("cargo:rerun-if-env-changed=JETLINK_BOARD");
    let selected = std::env::var("JETLINK_BOARD").unwrap_or_else(|_| "host-sim".to_string());
    let boards = match schema::load_dir(&dir) {
        Ok(b) => b,
        Err(e) => fail(&e),
    };
    let src = match schema::generate(&boards, &selected) {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    let names: Vec<String> = boards.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    println!("cargo::rustc-check-cfg=cfg(jetlink_board, values({}))", names.join(", "));
    println!("cargo:rustc-cfg=jetlink_board=\"{selected}\"");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("boards.rs");
    std::fs::write(out, src).expect("writing boards.rs");
}

fn fail(msg: &str) -> ! {
    // `cargo:error` shows the message as a build error; exit non-zero so older cargo fails too.
    println!("cargo::error={msg}");
    eprintln!("error: {msg}");
    std::process::exit(1);
}
