//! One backend per model: a model the primary backend can run (for TensorRT: one with a plan built
//! for this board and TensorRT version) runs there, every other model runs on the fallback (tract).
//! A tree ensemble (`ai.onnx.ml`) cannot be a TensorRT plan, so a real workload mixes engines.

use std::path::Path;

use anyhow::Result;

use super::{Backend, Engine};
use crate::manifest::{Manifest, ModelSpec};

/// Whether the primary backend has what it needs for a model (its ONNX file at `path`).
pub type HasNative = Box<dyn Fn(&ModelSpec, &Path) -> bool + Send + Sync>;

/// Chooses, per model, the primary backend when [`HasNative`] says so, else the fallback.
pub struct PerModelBackend {
    primary: Box<dyn Backend>,
    fallback: Box<dyn Backend>,
    has_native: HasNative,
    name: &'static str,
}

impl PerModelBackend {
    /// `name` is what the run header calls the combination (e.g. "tensorrt+tract-onnx").
    pub fn new(
        primary: Box<dyn Backend>,
        fallback: Box<dyn Backend>,
        has_native: HasNative,
        name: &'static str,
    ) -> Self {
        PerModelBackend { primary, fallback, has_native, name }
    }

    /// Which backend runs each model of `manifest`, by name, in manifest order.
    pub fn assignment(&self, manifest: &Manifest) -> Vec<(String, &'static str)> {
        manifest
            .models
            .iter()
            .map(|m| (m.name.clone(), self.choose(m, &manifest.path_of(&m.onnx)).name()))
            .collect()
    }

    fn choose(&self, spec: &ModelSpec, path: &Path) -> &dyn Backend {
        if (self.has_native)(spec, path) { self.primary.as_ref() } else { self.fallback.as_ref() }
    }
}

impl Backend for PerModelBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<Box<dyn Engine>> {
        self.choose(spec, path).load(spec, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);
    impl Backend for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn load(&self, _spec: &ModelSpec, _path: &Path) -> Result<Box<dyn Engine>> {
            anyhow::bail!("{} loaded", self.0)
        }
    }

    #[test]
    fn a_model_without_a_native_artifact_falls_back() {
        let dir = std::env::temp_dir().join(format!("jetlink-mixed-{}", std::process::id()));
        let m = crate::sim::synthetic_manifest(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let first = m.models[0].name.clone();
        let b = PerModelBackend::new(
            Box::new(Named("primary")),
            Box::new(Named("fallback")),
            Box::new(move |s: &ModelSpec, _: &Path| s.name == first),
            "primary+fallback",
        );
        let a = b.assignment(&m);
        assert_eq!(a[0].1, "primary");
        assert!(a[1..].iter().all(|(_, e)| *e == "fallback"));
        let e = b.load(&m.models[1], Path::new("x.onnx")).err().unwrap().to_string();
        assert_eq!(e, "fallback loaded");
    }
}
