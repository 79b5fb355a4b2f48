//! The workload manifest: which black-box models run on the stream, how each one sees a frame, what
//! it outputs and what it costs. Plain data (TOML), so a user brings their own models without code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What a model's output vector means; decides the link activation, loss and score.
///
/// In the manifest a kind is its name (`kind = "class"`); a `sequence` output also declares its
/// shape and decoding rule in the model's `steps`, `decode` and `alphabet` keys, which
/// [`Manifest::parse`] folds into [`OutputKind::Sequence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// A sequence of `steps` × C values, flattened step-major (C = size / steps): a text
    /// recogniser's CTC frames, per-step classes, or raw per-step vectors ([`SeqDecode`]).
    Sequence(SeqShape),
}

/// How a sequence output is read, which decides its activation (softmax per step for `ctc` and
/// `argmax`, none for `raw`) and its agreement score (`crate::links::agreement`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeqDecode {
    /// CTC greedy decoding: the per-step argmax, repeats collapsed, blanks (column 0) dropped;
    /// the string over `alphabet` (columns 1..C). Agreement: the decoded strings are equal.
    Ctc,
    /// One class per step (argmax over the C values). Agreement: every step's class is equal.
    Argmax,
    /// Raw per-step vectors. Agreement: every value within the model's `tolerance`.
    Raw,
}

impl SeqDecode {
    pub fn code(self) -> u8 {
        match self {
            SeqDecode::Ctc => 0,
            SeqDecode::Argmax => 1,
            SeqDecode::Raw => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<SeqDecode> {
        [SeqDecode::Ctc, SeqDecode::Argmax, SeqDecode::Raw].into_iter().find(|d| d.code() == c)
    }
    pub fn name(self) -> &'static str {
        match self {
            SeqDecode::Ctc => "ctc",
            SeqDecode::Argmax => "argmax",
            SeqDecode::Raw => "raw",
        }
    }
}

/// The shape and decoding rule of a sequence output. The values per step are the output's size
/// divided by `steps`. A model whose sequences are shorter than `steps` on some frames pads them:
/// with blank steps for `ctc` (decoding drops them), so T varies per frame up to `steps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqShape {
    pub steps: u32,
    pub decode: SeqDecode,
}

/// The most steps a sequence output may declare (bounds the predictor's fixed decode buffers).
pub const MAX_STEPS: u32 = 1024;

impl OutputKind {
    /// Every vector kind (sequence kinds carry a shape and are not enumerable).
    pub const ALL: [OutputKind; 6] = [
        OutputKind::Class,
        OutputKind::Multilabel,
        OutputKind::Regression,
        OutputKind::Count,
        OutputKind::Embedding,
        OutputKind::Box,
    ];

    /// Stable one-byte code used by the recording and bundle formats (a sequence's shape follows
    /// the code where those formats carry one).
    pub fn code(self) -> u8 {
        match self {
            OutputKind::Class => 0,
            OutputKind::Multilabel => 1,
            OutputKind::Regression => 2,
            OutputKind::Count => 3,
            OutputKind::Embedding => 4,
            OutputKind::Box => 5,
            OutputKind::Sequence(_) => SEQUENCE_CODE,
        }
    }

    /// The vector kind of a code (`None` for unknown codes and for [`SEQUENCE_CODE`], whose shape
    /// is read with [`OutputKind::sequence`]).
    pub fn from_code(code: u8) -> Option<OutputKind> {
        OutputKind::ALL.iter().copied().find(|k| k.code() == code)
    }

    /// A checked sequence kind: `steps` in 1..=[`MAX_STEPS`], `size` a multiple of `steps`, and at
    /// least 2 values per step for `ctc` and `argmax`. The error names the failing value.
    pub fn sequence(steps: u32, decode: SeqDecode, size: u32) -> Result<OutputKind> {
        if steps == 0 || steps > MAX_STEPS {
            bail!("steps {steps} must be in 1..={MAX_STEPS}");
        }
        if size % steps != 0 {
            bail!("size {size} is not a multiple of steps {steps} (size = steps x values per step)");
        }
        if decode != SeqDecode::Raw && size / steps < 2 {
            bail!(
                "decode {:?} needs at least 2 values per step, size {size} / steps {steps} gives {}",
                decode.name(),
                size / steps
            );
        }
        Ok(OutputKind::Sequence(SeqShape { steps, decode }))
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Class => "class",
            OutputKind::Multilabel => "multilabel",
            OutputKind::Regression => "regression",
            OutputKind::Count => "count",
            OutputKind::Embedding => "embedding",
            OutputKind::Box => "box",
            OutputKind::Sequence(_) => "sequence",
        }
    }

    /// The kind of a manifest name; a sequence's shape is filled in from the model's other keys.
    fn from_name(name: &str) -> Option<OutputKind> {
        if name == "sequence" {
            return Some(OutputKind::Sequence(SeqShape { steps: 0, decode: SeqDecode::Raw }));
        }
        OutputKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The sequence shape, for sequence kinds.
    pub fn seq(self) -> Option<SeqShape> {
        match self {
            OutputKind::Sequence(s) => Some(s),
            _ => None,
        }
    }
}

/// The kind code of sequence outputs.
pub const SEQUENCE_CODE: u8 = 6;

impl Serialize for OutputKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for OutputKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<OutputKind, D::Error> {
        let name = String::deserialize(d)?;
        OutputKind::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown kind {name:?}, expected one of class, multilabel, regression, count, embedding, box, sequence"
            ))
        })
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
    /// `v → 255 − v` (white ink on black becomes black ink on white). A struct variant with no
    /// fields, so that a stray key (`{ op = "invert", k = 1 }`) is refused like any other op's
    /// (serde ignores the fields of a unit variant); it encodes exactly as the unit variant did.
    Invert {},
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
    /// The rule its users judge the output by (`score = { rule = "presence", threshold = 0.5 }`;
    /// [`crate::scoring::ScoreRule`]); default the kind's own rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<crate::scoring::ScoreRule>,
    /// `kind = "sequence"` only: the number of steps T (the output is T × size/T values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// `kind = "sequence"` only: how a sequence is read (`ctc`, `argmax` or `raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<SeqDecode>,
    /// `kind = "sequence"` only: the symbols of the non-blank columns (`ctc`: C − 1 characters, for
    /// columns 1..C; `argmax`: optional, C characters). Used to show decoded strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alphabet: Option<String>,
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

impl ModelSpec {
    /// How the model's output is judged: its tolerance (default [`crate::links::DEFAULT_TOLERANCE`])
    /// and its declared rule.
    pub fn scoring(&self) -> crate::scoring::Scoring {
        crate::scoring::Scoring {
            tolerance: self.tolerance.unwrap_or(crate::links::DEFAULT_TOLERANCE),
            rule: self.score.unwrap_or(crate::scoring::ScoreRule::Tolerance {}),
        }
    }
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
    /// The manifest file itself, for messages; set when loading.
    #[serde(skip)]
    pub path: PathBuf,
}

/// Longest model name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
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
        m.path = path.to_path_buf();
        m.resolve_sequences().with_context(|| format!("checking manifest {}", path.display()))?;
        m.validate().with_context(|| format!("checking manifest {}", path.display()))?;
        Ok(m)
    }

    /// Fold each `sequence` model's `steps` and `decode` keys into its kind, checking them (and
    /// refusing those keys on other kinds).
    pub fn resolve_sequences(&mut self) -> Result<()> {
        for m in &mut self.models {
            let is_seq = matches!(m.kind, OutputKind::Sequence(_));
            if !is_seq {
                for (key, present) in [
                    ("steps", m.steps.is_some()),
                    ("decode", m.decode.is_some()),
                    ("alphabet", m.alphabet.is_some()),
                ] {
                    if present {
                        bail!(
                            "model {:?}: {key} is only for kind = \"sequence\", not {:?}",
                            m.name,
                            m.kind.name()
                        );
                    }
                }
                continue;
            }
            let (Some(steps), Some(decode)) = (m.steps, m.decode) else {
                bail!(
                    "model {:?}: kind = \"sequence\" needs steps (T) and decode (\"ctc\", \"argmax\" or \"raw\")",
                    m.name
                );
            };
            m.kind =
                OutputKind::sequence(steps, decode, m.size).with_context(|| format!("model {:?}", m.name))?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            bail!("no [[model]] entries");
        }
        // Importance weighs what runs: all zero, no model is worth a run and every output degrades.
        if self.models.iter().all(|m| m.importance == 0.0) {
            bail!(
                "every model has importance 0: nothing would be worth running (give the models' importance)"
            );
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.name.trim().is_empty() {
                bail!(
                    "model[{i}].name: a model needs a name (it names its outputs in recordings and bundles)"
                );
            }
            // Names travel in recordings, bundles, telemetry and every message: short and printable.
            let chars = m.name.chars().count();
            if chars > MAX_NAME_CHARS || m.name.chars().any(char::is_control) {
                let shown: String = m.name.chars().take(32).collect();
                bail!(
                    "model[{i}].name: {shown:?}{} has {chars} characters{}; a name has at most \
                     {MAX_NAME_CHARS} and no control characters",
                    if chars > 32 { " …" } else { "" },
                    if m.name.chars().any(char::is_control) {
                        ", some of them control characters"
                    } else {
                        ""
                    }
                );
            }
            if self.models[..i].iter().any(|o| o.name == m.name) {
                bail!("model[{i}].name: duplicate model name {:?}", m.name);
            }
            if m.size == 0 {
                bail!("model {:?}: size must be at least 1", m.name);
            }
            if m.kind == OutputKind::Class && m.size < 2 {
                bail!(
                    "model {:?}: a class output has at least 2 classes, not {} (one class always agrees)",
                    m.name,
                    m.size
                );
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
            // Bounded like the integer costs (2^50 µs is 35 years), so that sums and the DCTA
            // menu's times stay finite.
            let l = m.cost.latency_us;
            if !(m.cost.is_missing() || (0.0..=MAX_COST as f64).contains(&l)) {
                bail!("model {:?}: cost.latency_us {l} must be finite, >= 0 and at most {MAX_COST}", m.name);
            }
            if let OutputKind::Sequence(q) = m.kind {
                OutputKind::sequence(q.steps, q.decode, m.size)
                    .with_context(|| format!("model {:?}", m.name))?;
                let per_step = (m.size / q.steps) as usize;
                let symbols = m.alphabet.as_deref().map(|a| a.chars().count());
                // A decoded string is shown, compared and written to CSV: no control characters.
                if let Some((at, c)) =
                    m.alphabet.as_deref().and_then(|a| a.chars().enumerate().find(|(_, c)| c.is_control()))
                {
                    bail!(
                        "model {:?}: alphabet symbol {at} is the control character {:?}; symbols must be printable",
                        m.name,
                        c
                    );
                }
                match (q.decode, symbols) {
                    (SeqDecode::Ctc, None) => {
                        bail!(
                            "model {:?}: decode = \"ctc\" needs an alphabet of {} symbols (columns 1..{per_step}; column 0 is the blank)",
                            m.name,
                            per_step - 1
                        )
                    }
                    (SeqDecode::Ctc, Some(n)) if n != per_step - 1 => bail!(
                        "model {:?}: alphabet has {n} symbols, decode = \"ctc\" with {per_step} values per step needs {} (column 0 is the blank)",
                        m.name,
                        per_step - 1
                    ),
                    (SeqDecode::Argmax, Some(n)) if n != per_step => bail!(
                        "model {:?}: alphabet has {n} symbols, decode = \"argmax\" with {per_step} values per step needs {per_step}",
                        m.name
                    ),
                    (SeqDecode::Raw, Some(_)) => {
                        bail!("model {:?}: decode = \"raw\" takes no alphabet", m.name)
                    }
                    _ => {}
                }
            } else if m.steps.is_some() || m.decode.is_some() || m.alphabet.is_some() {
                bail!("model {:?}: steps, decode and alphabet are only for kind = \"sequence\"", m.name);
            }
            // Read as f32: a value past its range (3.4e38) arrives as inf.
            if let Some(t) = m.tolerance.filter(|t| !(t.is_finite() && *t > 0.0)) {
                bail!("model {:?}: tolerance {t} must be a finite number > 0 (at most 3.4e38)", m.name);
            }
            // Only regression outputs and raw sequences are judged within a tolerance: given for any
            // other kind it would be signed into the bundle and change nothing.
            let uses_tolerance = match m.kind {
                OutputKind::Regression => true,
                OutputKind::Sequence(q) => q.decode == SeqDecode::Raw,
                _ => false,
            };
            if m.tolerance.is_some() && !uses_tolerance {
                bail!(
                    "model {:?}: tolerance applies to kind = \"regression\" and raw sequences; a {} output \
                     is judged by its own rule (docs/workload.md), so leave it out",
                    m.name,
                    m.kind.name()
                );
            }
            if let Some(r) = m.score {
                r.check(m.kind, m.size).with_context(|| format!("model {:?}", m.name))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name = \"t\"\nstream = \"s.jls\"\n";

    fn model(kind_keys: &str) -> String {
        format!(
            "{HEAD}[[model]]\nname = \"ocr\"\nonnx = \"m.onnx\"\n{kind_keys}\ninput_shape = [1, 4]\nview = []\n"
        )
    }

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, Path::new("dir/manifest.toml"))
    }

    #[test]
    fn a_sequence_kind_takes_its_shape_from_steps_and_decode() {
        let m = parse(&model(
            "kind = \"sequence\"\nsize = 36\nsteps = 3\ndecode = \"ctc\"\nalphabet = \"0123456789?\"",
        ))
        .unwrap();
        assert_eq!(m.models[0].kind, OutputKind::Sequence(SeqShape { steps: 3, decode: SeqDecode::Ctc }));
        assert_eq!(m.models[0].kind.name(), "sequence");
        // Written back and read again: the same manifest.
        let text = toml::to_string(&m).unwrap();
        assert_eq!(parse(&text).unwrap().models, m.models);
        let m = parse(&model("kind = \"sequence\"\nsize = 8\nsteps = 4\ndecode = \"raw\"\ntolerance = 0.2"))
            .unwrap();
        assert_eq!(m.models[0].kind.seq().unwrap().steps, 4);
    }

    #[test]
    fn keys_that_would_mean_nothing_are_refused() {
        let err = |keys: &str| format!("{:#}", parse(&model(keys)).unwrap_err());
        let e = err("kind = \"class\"\nsize = 1");
        assert!(e.contains("a class output has at least 2 classes, not 1"), "{e}");
        let e = err("kind = \"class\"\nsize = 10\ntolerance = 0.3");
        assert!(
            e.contains("tolerance applies to kind = \"regression\" and raw sequences; a class output"),
            "{e}"
        );
        let e = err("kind = \"regression\"\nsize = 2\nimportance = 0.0");
        assert!(e.contains("every model has importance 0"), "{e}");
        let e = format!(
            "{:#}",
            parse(
                &model("kind = \"class\"\nsize = 4").replace("\"ocr\"", &format!("\"{}\"", "n".repeat(200)))
            )
            .unwrap_err()
        );
        assert!(e.contains("has 200 characters; a name has at most 128"), "{e}");
        parse(&model("kind = \"regression\"\nsize = 2\ntolerance = 0.3")).unwrap();
    }

    #[test]
    fn bad_sequence_keys_are_refused_naming_the_model_and_value() {
        let err = |keys: &str| format!("{:#}", parse(&model(keys)).unwrap_err());
        let e = err("kind = \"sequence\"\nsize = 36\ndecode = \"ctc\"");
        assert!(e.contains("model \"ocr\"") && e.contains("needs steps"), "{e}");
        let e = err("kind = \"sequence\"\nsize = 36\nsteps = 0\ndecode = \"argmax\"");
        assert!(e.contains("steps 0 must be in 1..=1024"), "{e}");
        let e = err("kind = \"sequence\"\nsize = 35\nsteps = 3\ndecode = \"argmax\"");
        assert!(e.contains("size 35 is not a multiple of steps 3"), "{e}");
        let e = err("kind = \"sequence\"\nsize = 36\nsteps = 3\ndecode = \"ctc\"\nalphabet = \"0123\"");
        assert!(e.contains("alphabet has 4 symbols") && e.contains("needs 11"), "{e}");
        let e = err("kind = \"sequence\"\nsize = 36\nsteps = 3\ndecode = \"ctc\"");
        assert!(e.contains("needs an alphabet of 11 symbols"), "{e}");
        let e = err("kind = \"sequence\"\nsize = 3\nsteps = 3\ndecode = \"ctc\"\nalphabet = \"\"");
        assert!(e.contains("at least 2 values per step"), "{e}");
        let e = err(
            "kind = \"sequence\"\nsize = 36\nsteps = 3\ndecode = \"ctc\"\nalphabet = \"012345678\\u0000?\"",
        );
        assert!(e.contains("alphabet symbol 9 is the control character '\\0'"), "{e}");
        let e = err("kind = \"sequence\"\nsize = 36\nsteps = 3\ndecode = \"beam\"");
        assert!(e.contains("beam"), "{e}");
        let e = err("kind = \"class\"\nsize = 10\nsteps = 3");
        assert!(e.contains("steps is only for kind = \"sequence\""), "{e}");
        let e = err("kind = \"sentence\"\nsize = 10");
        assert!(e.contains("unknown kind \"sentence\""), "{e}");
    }

    #[test]
    fn a_declared_score_rule_is_parsed_and_checked() {
        use crate::scoring::{Per, ScoreRule};
        let m = parse(&model(
            "kind = \"regression\"\nsize = 4\nscore = { rule = \"presence\", threshold = 0.3 }",
        ))
        .unwrap();
        assert_eq!(m.models[0].score, Some(ScoreRule::Presence { threshold: 0.3, per: Per::Tile }));
        assert!(m.models[0].scoring().declared());
        let m = parse(&model(
            "kind = \"regression\"\nsize = 10\nscore = { rule = \"boxes\", threshold = 0.5, iou = 0.5 }",
        ))
        .unwrap();
        assert_eq!(m.models[0].score, Some(ScoreRule::Boxes { threshold: 0.5, iou: 0.5 }));
        let m = parse(&model("kind = \"regression\"\nsize = 4\ntolerance = 0.2")).unwrap();
        assert!(!m.models[0].scoring().declared());
        let err = |keys: &str| format!("{:#}", parse(&model(keys)).unwrap_err());
        let e = err("kind = \"regression\"\nsize = 4\nscore = { rule = \"presence\", threshold = inf }");
        assert!(e.contains("model \"ocr\"") && e.contains("threshold inf must be finite"), "{e}");
        // Past f32's range a tolerance arrives as inf: the message says what is allowed.
        let e = err("kind = \"regression\"\nsize = 4\ntolerance = 1e308");
        assert!(e.contains("must be a finite number > 0 (at most 3.4e38)"), "{e}");
        let e =
            err("kind = \"regression\"\nsize = 7\nscore = { rule = \"boxes\", threshold = 0.5, iou = 0.5 }");
        assert!(e.contains("multiple of 5"), "{e}");
        let e = err("kind = \"regression\"\nsize = 4\nscore = { rule = \"presense\", threshold = 0.5 }");
        assert!(e.contains("presense"), "{e}");
        let e = err("kind = \"regression\"\nsize = 4\nscore = { rule = \"count\" }");
        assert!(e.contains("threshold"), "{e}");
        let e = err("kind = \"regression\"\nsize = 4\nscore = { rule = \"class\", iou = 0.5 }");
        assert!(e.contains("iou"), "{e}");
    }
}
