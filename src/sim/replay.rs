//! The simulated engine: returns a model's recorded outputs (from a reference recording) for the
//! frame the control loop is on. Used by tests that must not depend on a runtime's own allocations
//! or speed, and by `--engines replay` for fast replays. Faults can be injected per model.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::engine::{Backend, Engine, EngineError, EngineInfo, TensorInfo};
use crate::manifest::ModelSpec;
use crate::recording::Recording;

/// Loads "engines" that replay a recording.
pub struct ReplayBackend {
    pub recording: Arc<Recording>,
}

struct ReplayEngine {
    info: EngineInfo,
    memory: u64,
    model: usize,
    recording: Arc<Recording>,
    /// The frame the next run is for ([`Engine::set_frame`]).
    frame: u32,
}

impl Backend for ReplayBackend {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn load(&self, spec: &ModelSpec, _path: &Path) -> Result<Box<dyn Engine>> {
        let model = self
            .recording
            .model_index(&spec.name)
            .with_context(|| format!("the recording has no model {:?}", spec.name))?;
        anyhow::ensure!(
            self.recording.models[model].size == spec.size as usize,
            "model {:?}: recording has size {}, manifest {}",
            spec.name,
            self.recording.models[model].size,
            spec.size
        );
        let shape: Vec<usize> = spec.input_shape.iter().map(|&d| d as usize).collect();
        Ok(Box::new(ReplayEngine {
            info: EngineInfo {
                backend: "replay",
                input: TensorInfo { name: "input".into(), shape },
                output: TensorInfo { name: "output".into(), shape: vec![1, spec.size as usize] },
            },
            memory: spec.cost.memory_bytes(),
            model,
            recording: self.recording.clone(),
            frame: 0,
        }))
    }
}

impl Engine for ReplayEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn set_frame(&mut self, index: u32) {
        self.frame = index;
    }

    fn memory_bytes(&self) -> u64 {
        self.memory
    }

    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        self.info.check_buffers(input, output)?;
        let row = self.recording.row_of_frame(self.frame).ok_or(EngineError::Runtime)?;
        output.copy_from_slice(self.recording.output(row, self.model));
        Ok(())
    }
}
