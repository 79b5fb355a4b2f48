//! The workload manifest: which black-box models run on the stream, how each one sees a frame, what
//! it outputs and what it costs. Plain data (TOML), so a user brings their own models without code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What a model's output vector means; decides the link activation, loss and score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// Single-label class scores (softmax).
    Class,
    /// Independent per-label probabilities (sigmoid).
    Multilabel,
    /// Real values (linear).
    Regression,
    /// A count (linear; scored as |error| < 0.5).
    Count,
    /// A feature embedding (linear; scored by cosine similarity).
    Embedding,
    /// A box [x, y, w, h] (linear; scored by IoU).
    Box,
}

impl OutputKind {
    pub const ALL: [OutputKind; 6] = [
        OutputKind::Class,
        OutputKind::Multilabel,
        OutputKind::Regression,
        OutputKind::Count,
        OutputKind::Embedding,
        OutputKind::Box,
    ];

    /// Stable one-byte code used by the recording and bundle formats.
    pub fn code(self) -> u8 {
        match self {
            OutputKind::Class => 0,
            OutputKind::Multilabel => 1,
            OutputKind::Regression => 2,
            OutputKind::Count => 3,
            OutputKind::Embedding => 4,
            OutputKind::Box => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<OutputKind> {
        OutputKind::ALL.iter().copied().find(|k| k.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Class => "class",
            OutputKind::Multilabel => "multilabel",
            OutputKind::Regression => "regression",
            OutputKind::Count => "count",
            OutputKind::Embedding => "embedding",
            OutputKind::Box => "box",
        }
    }
}

/// One step of a model's input view. Applied in order to the frame, which starts as an
/// `height × width × channels` image of `f32` pixel values 0..=255. The final image is handed to the
/// model flattened channel-major (NCHW with N = 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ViewOp {
    /// Keep the `w × h` window whose top-left corner is (`x`, `y`).
    Crop { x: u32, y: u32, w: u32, h: u32 },
    /// Average non-overlapping `k × k` blocks (sum in row-major order, then divide by k²).
    Pool { k: u32 },
    /// Nearest-neighbour upscale by an integer factor `k`.
    Upsample { k: u32 },
    /// Pad with a constant `value` (in the current units).
    Pad { top: u32, bottom: u32, left: u32, right: u32, value: f32 },
    /// `v → 255 − v` (white ink on black becomes black ink on white).
    Invert,
    /// `v → (v / 255 − mean) / std`.
    Normalize { mean: f32, std: f32 },
    /// Replicate a one-channel image into `n` channels.
    Channels { n: u32 },
}

/// Where a model's costs come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CostOrigin {
    /// Written in the manifest's `[model.cost]` (measured by whoever wrote it).
    #[default]
    Manifest,
    /// The manifest has no `[model.cost]` and nothing has measured it yet (all figures 0).
    Missing,
    /// Measured by this process (`jetlink profile`, or `build`/`run` filling a missing block).
    Measured,
}

/// Costs of one model, measured by the tool that built the workload, or by `jetlink profile`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    /// Bytes of weights (initialisers, or tree tables).
    pub weight_bytes: u64,
    /// Peak bytes of live intermediate tensors for one frame.
    pub activation_bytes: u64,
    /// Floating-point operations per frame.
    pub flops: u64,
    /// Median latency per frame (batch 1, one thread), microseconds, and the runtime that measured it.
    pub latency_us: f64,
    pub latency_runtime: String,
    /// Where these figures come from (not part of the manifest's text).
    #[serde(skip)]
    pub origin: CostOrigin,
}

impl Cost {
    /// The cost of a model whose manifest entry has no `[model.cost]`: zeros until measured.
    pub fn missing() -> Cost {
        Cost {
            weight_bytes: 0,
            activation_bytes: 0,
            flops: 0,
            latency_us: 0.0,
            latency_runtime: String::new(),
            origin: CostOrigin::Missing,
        }
    }

    pub fn is_missing(&self) -> bool {
        self.origin == CostOrigin::Missing
    }

    /// Not written back when the manifest is serialised: only costs that came from a file.
    fn not_from_manifest(&self) -> bool {
        self.origin != CostOrigin::Manifest
    }

    /// Memory the scheduler charges for a running model.
    pub fn memory_bytes(&self) -> u64 {
        self.weight_bytes + self.activation_bytes
    }
}

/// One black-box model of the workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// ONNX file, relative to the manifest.
    pub onnx: String,
    pub kind: OutputKind,
    /// Which output of the ONNX file is the model's output vector, by name (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Length of the output vector.
    pub size: u32,
    /// Task importance (default 1).
    #[serde(default = "one")]
    pub importance: f32,
    /// Input tensor shape, batch included (batch must be 1 or symbolic in the file).
    pub input_shape: Vec<u32>,
    pub view: Vec<ViewOp>,
    /// Agreement tolerance for `regression` outputs (absolute, per element); default 0.1.
    #[serde(default)]
    pub tolerance: Option<f32>,
    /// Optional: without it, `jetlink profile` (or `build`/`run`, which call it) measures the model.
    #[serde(default = "Cost::missing", skip_serializing_if = "Cost::not_from_manifest")]
    pub cost: Cost,
    /// Where the model comes from and under which licence.
    #[serde(default)]
    pub provenance: String,
    /// The ONNX file's bytes, read once by [`Manifest::pin_onnx`]: the bundle check hashes these and
    /// the engine loads these, so the file cannot change between the check and the load.
    #[serde(skip)]
    pub onnx_bytes: Option<std::sync::Arc<Vec<u8>>>,
}

fn one() -> f32 {
    1.0
}

/// The whole workload description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// Stream file (frames), relative to the manifest.
    pub stream: String,
    /// Reference recording (every model's output on every frame, computed by a reference runtime).
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(rename = "model")]
    pub models: Vec<ModelSpec>,
    /// Folder of the manifest; set when loading.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The largest output a model may declare (`size`, values).
pub const MAX_OUTPUT_SIZE: u32 = 1 << 20;
/// The largest cost field (`weight_bytes`, `activation_bytes`, `flops`): 2^50 (1 PiB or 10^15 FLOPs
/// per frame), so that costs of many models add up without wrapping.
pub const MAX_COST: u64 = 1 << 50;

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = crate::input::read_to_string(path, "manifest", crate::input::limit::TEXT)?;
        Manifest::parse(&text, path)
    }

    /// Parse and check the text of the manifest file `path` (errors name it; relative paths in it
    /// are taken from its folder). Reads nothing from disk.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let mut m: Manifest =
            toml::from_str(text).with_context(|| format!("parsing manifest {}", path.display()))?;
        m.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        m.validate().with_context(|| format!("checking manifest {}", path.display()))?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            bail!("no [[model]] entries");
        }
        for (i, m) in self.models.iter().enumerate() {
            if self.models[..i].iter().any(|o| o.name == m.name) {
                bail!("model[{i}].name: duplicate model name {:?}", m.name);
            }
            if m.size == 0 {
                bail!("model {:?}: size must be at least 1", m.name);
            }
            if m.kind == OutputKind::Box && m.size != 4 {
                bail!("model {:?}: a box output has size 4, not {}", m.name, m.size);
            }
            if !(m.importance.is_finite() && m.importance >= 0.0) {
                bail!("model {:?}: importance {} must be finite and >= 0", m.name, m.importance);
            }
            if m.input_shape.is_empty() || m.input_shape.contains(&0) {
                bail!("model {:?}: input_shape {:?} must be non-empty with no zero", m.name, m.input_shape);
            }
            // Sizes and costs from a file: bounded, so that sums over the models cannot wrap.
            if m.size > MAX_OUTPUT_SIZE {
                bail!("model {:?}: size {} is above the limit of {MAX_OUTPUT_SIZE}", m.name, m.size);
            }
            for (field, v) in [
                ("cost.weight_bytes", m.cost.weight_bytes),
                ("cost.activation_bytes", m.cost.activation_bytes),
                ("cost.flops", m.cost.flops),
            ] {
                if v > MAX_COST {
                    bail!("model {:?}: {field} {v} is above the limit of {MAX_COST}", m.name);
                }
            }

            if m.output.as_deref().is_some_and(|o| o.is_empty()) {
                bail!("model {:?}: output must name one of the ONNX file's outputs, not be empty", m.name);
            }
            if !m.cost.is_missing() && !(m.cost.latency_us.is_finite() && m.cost.latency_us >= 0.0) {
                bail!("model {:?}: cost.latency_us {} must be finite and >= 0", m.name, m.cost.latency_us);
            }
            if let Some(t) = m.tolerance {
                if !(t.is_finite() && t > 0.0) {
                    bail!("model {:?}: tolerance {t} must be > 0", m.name);
                }
            }
        }
        Ok(())
    }

    /// Read every model's ONNX file into memory once (see [`ModelSpec::onnx_bytes`]).
    pub fn pin_onnx(&mut self) -> Result<()> {
        for i in 0..self.models.len() {
            let path = self.path_of(&self.models[i].onnx);
            let what = format!("model {:?}: ONNX file", self.models[i].name);
            let bytes = crate::input::read(&path, &what, crate::input::limit::MODEL)?;
            self.models[i].onnx_bytes = Some(std::sync::Arc::new(bytes));
        }
        Ok(())
    }

    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// Models whose manifest entry has no `[model.cost]` and that nothing has measured yet.
    pub fn missing_costs(&self) -> Vec<usize> {
        (0..self.models.len()).filter(|&i| self.models[i].cost.is_missing()).collect()
    }

    /// Total output length over all models.
    pub fn total_outputs(&self) -> usize {
        self.models.iter().map(|m| m.size as usize).sum()
    }
}
