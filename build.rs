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
    println!("cargo:rerun-if-env-changed=JETLINK_BUNDLE_KEY");
    let env_key = std::env::var("JETLINK_BUNDLE_KEY").ok();
    let mut boards = match schema::load_dir(&dir) {
        Ok(b) => b,
        Err(e) => fail(&e),
    };
    if let Err(e) = schema::settle_bundle_key(&mut boards, &selected, env_key.as_deref()) {
        fail(&e);
    }
    // A relative telemetry trace names a file of this repository (the simulated board's own data):
    // compile it in as an absolute path, so that the binary runs from any working directory.
    for (_, b) in &mut boards {
        if let Some(tr) =
            b.telemetry.trace.as_mut().filter(|t| std::path::Path::new(t.as_str()).is_relative())
        {
            *tr = root.join(&*tr).to_string_lossy().into_owned();
        }
    }
    let src = match schema::generate(&boards, &selected) {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    let names: Vec<String> = boards.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    println!("cargo::rustc-check-cfg=cfg(jetlink_board, values({}))", names.join(", "));
    println!("cargo:rustc-cfg=jetlink_board=\"{selected}\"");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("boards.rs");
    std::fs::write(out, src).expect("writing boards.rs");
    #[cfg(feature = "tensorrt")]
    tensorrt::build_shim();
}

fn fail(msg: &str) -> ! {
    // `cargo:error` shows the message as a build error; exit non-zero so older cargo fails too.
    println!("cargo::error={msg}");
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// The `tensorrt` feature: compile `src/engine/tensorrt/shim.cpp` against TensorRT and the CUDA
/// runtime and link `libnvinfer` + `libcudart`. Nothing here runs without the feature.
#[cfg(feature = "tensorrt")]
mod tensorrt {
    use std::path::{Path, PathBuf};

    const HOW: &str = "install TensorRT's development files (JetPack: `sudo apt install tensorrt-dev`, \
                       or `libnvinfer-dev`), or point TENSORRT_ROOT (or TENSORRT_INCLUDE_DIR and \
                       TENSORRT_LIB_DIR) at a TensorRT 8.5+ installation";

    fn env_path(key: &str) -> Option<PathBuf> {
        println!("cargo:rerun-if-env-changed={key}");
        std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    fn env_paths(key: &str) -> Vec<PathBuf> {
        println!("cargo:rerun-if-env-changed={key}");
        std::env::var_os(key).map(|v| std::env::split_paths(&v).collect()).unwrap_or_default()
    }

    /// `NV_TENSORRT_MAJOR/MINOR/PATCH` from `NvInferVersion.h`.
    fn header_version(include: &Path) -> Option<(u32, u32, u32)> {
        let text = std::fs::read_to_string(include.join("NvInferVersion.h")).ok()?;
        let get = |name: &str| {
            text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("#define") && w.next() == Some(name)).then(|| w.next()?.parse().ok())?
            })
        };
        Some((get("NV_TENSORRT_MAJOR")?, get("NV_TENSORRT_MINOR")?, get("NV_TENSORRT_PATCH")?))
    }

    pub fn build_shim() {
        println!("cargo:rerun-if-changed=src/engine/tensorrt/shim.cpp");
        println!("cargo:rerun-if-changed=src/engine/tensorrt/shim.h");
        let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        let multiarch = format!("{arch}-linux-gnu");
        let root = env_path("TENSORRT_ROOT");

        // Headers: explicit dir, then $TENSORRT_ROOT/include, then where JetPack / the Debian
        // packages put them.
        let mut inc: Vec<PathBuf> = env_path("TENSORRT_INCLUDE_DIR").into_iter().collect();
        inc.extend(root.as_ref().map(|r| r.join("include")));
        inc.push(PathBuf::from("/usr/include").join(&multiarch));
        inc.push(PathBuf::from("/usr/include"));
        let Some(trt_inc) = inc.iter().find(|d| d.join("NvInferRuntime.h").is_file()) else {
            let tried: Vec<_> = inc.iter().map(|d| d.display().to_string()).collect();
            super::fail(&format!(
                "feature `tensorrt`: NvInferRuntime.h not found (looked in {}): {HOW}",
                tried.join(", ")
            ));
        };
        let Some((major, minor, patch)) = header_version(trt_inc) else {
            super::fail(&format!(
                "feature `tensorrt`: {}/NvInferVersion.h missing or unreadable: {HOW}",
                trt_inc.display()
            ));
        };
        if (major, minor) < (8, 5) {
            super::fail(&format!(
                "feature `tensorrt`: TensorRT {major}.{minor}.{patch} in {} is too old; the shim \
                 needs 8.5 or newer (name-based IO tensors, enqueueV3): {HOW}",
                trt_inc.display()
            ));
        }

        // CUDA runtime: cuda_runtime_api.h and libcudart (JetPack: /usr/local/cuda).
        let cuda_root = env_path("CUDA_ROOT")
            .or_else(|| env_path("CUDA_HOME"))
            .or_else(|| env_path("CUDA_PATH"))
            .unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
        let mut cuda_inc = env_paths("CUDA_INCLUDE_DIR");
        if cuda_inc.is_empty() {
            cuda_inc.push(cuda_root.join("include"));
        }
        if !cuda_inc.iter().any(|d| d.join("cuda_runtime_api.h").is_file()) {
            let tried: Vec<_> = cuda_inc.iter().map(|d| d.display().to_string()).collect();
            super::fail(&format!(
                "feature `tensorrt`: cuda_runtime_api.h not found (looked in {}): install the CUDA \
                 toolkit (JetPack: `sudo apt install cuda-cudart-dev-*` or `nvidia-jetpack`), or set \
                 CUDA_ROOT, or CUDA_INCLUDE_DIR (a path list) and CUDA_LIB_DIR",
                tried.join(", ")
            ));
        }

        let mut build = cc::Build::new();
        build.cpp(true).std("c++17").file("src/engine/tensorrt/shim.cpp").include("src/engine/tensorrt");
        build.warnings(true).extra_warnings(true);
        // -isystem: TensorRT's own headers are full of deprecation warnings that are not ours.
        for d in std::iter::once(trt_inc).chain(cuda_inc.iter()) {
            build.flag(format!("-isystem{}", d.display()));
        }
        build.compile("jetlink_trt_shim");

        // Libraries. A missing library is a warning, not an error, so the shim can be compile-checked
        // against headers alone; the link step then fails with "unable to find -lnvinfer".
        let mut lib: Vec<PathBuf> = env_path("TENSORRT_LIB_DIR").into_iter().collect();
        lib.extend(root.as_ref().map(|r| r.join("lib")));
        lib.push(PathBuf::from("/usr/lib").join(&multiarch));
        match lib.iter().find(|d| d.join("libnvinfer.so").exists()) {
            Some(d) => println!("cargo:rustc-link-search=native={}", d.display()),
            None => {
                let tried: Vec<_> = lib.iter().map(|d| d.display().to_string()).collect();
                println!(
                    "cargo:warning=feature `tensorrt`: libnvinfer.so not found (looked in {}); linking \
                     will fail: {HOW}",
                    tried.join(", ")
                );
            }
        }
        let mut cuda_lib: Vec<PathBuf> = env_path("CUDA_LIB_DIR").into_iter().collect();
        cuda_lib.push(cuda_root.join("lib64"));
        cuda_lib.push(cuda_root.join(format!("targets/{arch}-linux/lib")));
        match cuda_lib.iter().find(|d| d.join("libcudart.so").exists()) {
            Some(d) => println!("cargo:rustc-link-search=native={}", d.display()),
            None => println!(
                "cargo:warning=feature `tensorrt`: libcudart.so not found (looked in {}); linking \
                 will fail unless the linker finds it: set CUDA_LIB_DIR",
                cuda_lib.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
        println!("cargo:rustc-link-lib=dylib=nvinfer");
        println!("cargo:rustc-link-lib=dylib=cudart");
        println!("cargo:rustc-env=JETLINK_TRT_HEADERS={major}.{minor}.{patch}");
    }
}
