//! The prepared CPU predictor: fills the outputs of the models that did not run from those that did,
//! through every link into each missing target and that target's ensemble. All buffers are
//! allocated in [`Predictor::new`]; [`Predictor::predict`] and [`Predictor::signals`] never
//! allocate. This is the reference the CUDA kernels match.

use crate::model_set::ModelSet;
use std::time::Instant;

use super::ensemble;
use super::mlp;
use super::weights::{EnsembleSet, LinkSet, source_of_slot};
use super::{LinkError, LinkModel, activate, agreement, entropy_uncertainty};
use crate::manifest::OutputKind;
use crate::recording::Recording;
use crate::row::RowLayout;

/// Drift signals of one predicted target on the last frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DriftSignals {
    /// Class/multilabel: normalised entropy of the ensemble output in [0, 1]. Regression-like kinds:
    /// mean (over elements) variance of the link predictions across the available sources.
    pub uncertainty: f32,
    /// 1 − mean agreement of each available link's own prediction with the ensemble output, in [0, 1].
    pub disagreement: f32,
    /// Number of links that contributed.
    pub links: u32,
}

impl DriftSignals {
    /// The one uncertainty signal of a predicted output, in [0, 1]: the mean of its uncertainty
    /// (capped at 1) and the disagreement of its links. Drift levels, label selection and audits
    /// all read this.
    pub fn score(&self) -> f32 {
        0.5 * (self.uncertainty.min(1.0) + self.disagreement)
    }
}

/// Everything needed to predict missing outputs, with every buffer allocated up front.
#[derive(Clone, Debug)]
pub struct Predictor {
    n: usize,
    kinds: Vec<OutputKind>,
    scorings: Vec<crate::scoring::Scoring>,
    /// Where each model's output lives in a row.
    layout: RowLayout,
    pub(crate) links: LinkSet,
    pub(crate) ensembles: EnsembleSet,
    /// Per target j, k·|Y_j| link outputs (pre-activation), at `z_off[j]`.
    z: Vec<f32>,
    z_off: Vec<usize>,
    /// Last ensemble output per target (activated), laid out like a row.
    y: Vec<f32>,
    xn: Vec<f32>,
    a: Vec<f32>,
    tmp: Vec<f32>,
    /// A source's link input where it differs from its output (`links::source_input`).
    inp: Vec<f32>,
    /// Ensemble scratch: per-slot block outputs, k·max_out.
    u: Vec<f32>,
    /// A set head's input: its slots' link outputs gathered, k·max_out.
    zc: Vec<f32>,
    last_active: Option<ModelSet>,
}

impl Predictor {
    /// Prepare a predictor from a bundle's weights (copied; the predictor owns them so adaptation
    /// can update them in place).
    pub fn new(bundle: &impl LinkModel) -> Predictor {
        let layout = bundle.layout();
        let n = layout.len();
        let sizes = layout.sizes();
        let at = layout.stride();
        let mut z_off = Vec::with_capacity(n);
        let mut zl = 0;
        for &s in sizes {
            z_off.push(zl);
            zl += (n - 1) * s;
        }
        let max_in = sizes.iter().copied().max().unwrap_or(1);
        let max_h = bundle.link_set().dims.iter().map(|d| d.hidden as usize).max().unwrap_or(1);
        Predictor {
            n,
            kinds: bundle.kinds(),
            scorings: bundle.scorings(),
            links: bundle.link_set().clone(),
            ensembles: bundle.ensemble_set().clone(),
            z: vec![0.0; zl],
            z_off,
            y: vec![0.0; at],
            xn: vec![0.0; max_in],
            a: vec![0.0; max_h],
            tmp: vec![0.0; max_in],
            inp: vec![0.0; max_in],
            u: vec![0.0; (n - 1) * max_in],
            zc: vec![0.0; (n - 1) * max_in],
            layout,
            last_active: None,
        }
    }

    pub fn n_models(&self) -> usize {
        self.n
    }

    /// Length of one row (all models' outputs).
    pub fn stride(&self) -> usize {
        self.layout.stride()
    }

    /// Where each model's output lives in a row.
    pub fn layout(&self) -> &RowLayout {
        &self.layout
    }

    pub fn links(&self) -> &LinkSet {
        &self.links
    }

    pub fn ensembles(&self) -> &EnsembleSet {
        &self.ensembles
    }

    pub(crate) fn kind(&self, j: usize) -> OutputKind {
        self.kinds[j]
    }

    pub(crate) fn slice(&self, m: usize) -> std::ops::Range<usize> {
        self.layout.range(m)
    }

    pub(crate) fn check_mask(&self, mask: ModelSet) -> Result<(), LinkError> {
        if mask.exceeds(self.n) {
            return Err(LinkError::MaskOutOfRange { mask, models: self.n });
        }
        Ok(())
    }

    /// Predict every model not in `active` (bit i = model i ran) from the active models' outputs in
    /// `row` (laid out like a recording row; only active slices are read). `out` receives a full row:
    /// active slices copied from `row`, the others predicted (activated, like the model's output).
    pub fn predict(&mut self, active: ModelSet, row: &[f32], out: &mut [f32]) -> Result<(), LinkError> {
        let stride = self.layout.stride();
        if row.len() != stride {
            return Err(LinkError::RowLength { expected: stride, got: row.len() });
        }
        if out.len() != stride {
            return Err(LinkError::OutLength { expected: stride, got: out.len() });
        }
        self.check_mask(active)?;
        let k = self.n - 1;
        for j in 0..self.n {
            let sj = self.slice(j);
            if active.contains(j) {
                out[sj.clone()].copy_from_slice(&row[sj]);
                continue;
            }
            let no = self.layout.size(j);
            let zj = &mut self.z[self.z_off[j]..self.z_off[j] + k * no];
            for s in 0..k {
                let i = source_of_slot(j, s);
                if !active.contains(i) {
                    continue;
                }
                let idx = j * k + s;
                let x = super::source_input(self.kinds[i], &row[self.layout.range(i)], &mut self.inp);
                mlp::forward(
                    self.links.dims[idx],
                    self.links.block(idx),
                    x,
                    &mut self.xn,
                    &mut self.a,
                    &mut zj[s * no..(s + 1) * no],
                );
            }
            let y = &mut out[sj.clone()];
            let slots = active.slots_for(j);
            match self.ensembles.head_for(j, slots) {
                // This source set has its own head: the set's outputs, gathered, through it.
                Some(h) => {
                    let zc = &mut self.zc[..slots.len() * no];
                    ensemble::gather(no, zj, slots, zc);
                    let d = self.ensembles.head_dims(h);
                    let all = ModelSet::all(slots.len());
                    ensemble::forward(d, self.ensembles.head_block(h), zc, all, &mut self.u, y);
                }
                None => ensemble::forward(
                    self.ensembles.dims[j],
                    self.ensembles.block(j),
                    zj,
                    slots,
                    &mut self.u,
                    y,
                ),
            }
            activate(self.kinds[j], y);
            self.y[sj].copy_from_slice(y);
        }
        self.last_active = Some(active);
        Ok(())
    }

    /// Whether predicting with `active` uses a per-source-set ensemble head for some target.
    pub fn uses_set_head(&self, active: ModelSet) -> bool {
        !self.ensembles.heads.is_empty()
            && (0..self.n)
                .any(|j| !active.contains(j) && self.ensembles.head_for(j, active.slots_for(j)).is_some())
    }

    /// [`predict`](Self::predict) with the active set as flags.
    pub fn predict_flags(&mut self, active: &[bool], row: &[f32], out: &mut [f32]) -> Result<(), LinkError> {
        if active.len() != self.n {
            return Err(LinkError::BadModel { index: active.len(), models: self.n });
        }
        let mask: ModelSet = active.iter().enumerate().filter(|&(_, &a)| a).map(|(i, _)| i).collect();
        self.predict(mask, row, out)
    }

    /// Drift signals of target `j` from the last [`predict`](Self::predict) call. A target that was
    /// active (or before any prediction) has no signals (all zero).
    pub fn signals(&mut self, j: usize) -> Result<DriftSignals, LinkError> {
        if j >= self.n {
            return Err(LinkError::BadModel { index: j, models: self.n });
        }
        let Some(active) = self.last_active.filter(|a| !a.contains(j)) else {
            return Ok(DriftSignals::default());
        };
        let (k, no, kind) = (self.n - 1, self.layout.size(j), self.kinds[j]);
        let zj = &self.z[self.z_off[j]..self.z_off[j] + k * no];
        let y = &self.y[self.slice(j)];
        let tmp = &mut self.tmp[..no];
        let (mut count, mut agree) = (0u32, 0.0f32);
        for s in 0..k {
            if !active.contains(source_of_slot(j, s)) {
                continue;
            }
            tmp.copy_from_slice(&zj[s * no..(s + 1) * no]);
            activate(kind, tmp);
            agree += agreement(kind, self.scorings[j], tmp, y);
            count += 1;
        }
        if count == 0 {
            return Ok(DriftSignals::default());
        }
        let uncertainty = match kind {
            OutputKind::Class | OutputKind::Multilabel => entropy_uncertainty(kind, y),
            _ => {
                let mut var = 0.0;
                for d in 0..no {
                    let (mut m, mut m2) = (0.0f32, 0.0f32);
                    for s in 0..k {
                        if active.contains(source_of_slot(j, s)) {
                            let v = zj[s * no + d];
                            m += v;
                            m2 += v * v;
                        }
                    }
                    let c = count as f32;
                    var += (m2 / c - (m / c) * (m / c)).max(0.0);
                }
                var / no as f32
            }
        };
        Ok(DriftSignals { uncertainty, disagreement: 1.0 - agree / count as f32, links: count })
    }
}

/// Timing of [`Predictor::predict`] per frame.
#[derive(Clone, Debug)]
pub struct BenchStats {
    pub calls: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Mean µs per call by number of active models (index = |A|; entries 0 and n unused).
    pub mean_us_by_active: Vec<f64>,
    /// The slowest active mask by median, and its median µs.
    pub worst_mask: ModelSet,
    pub worst_mask_us: f64,
}

/// Time CPU link inference for one frame: every target not active predicted through all its links
/// from the active ones, plus its ensemble. Cycles over every non-empty proper subset of models as the
/// active set and over the recording's rows; `iters` calls in all (after a warm-up pass).
pub fn bench_predict(
    bundle: &impl LinkModel,
    recording: &Recording,
    iters: usize,
) -> anyhow::Result<BenchStats> {
    let mut p = Predictor::new(bundle);
    anyhow::ensure!(
        recording.stride() == p.stride(),
        "recording rows have {} values, the bundle's models {}",
        recording.stride(),
        p.stride()
    );
    anyhow::ensure!(!recording.is_empty() && iters > 0, "empty recording or zero iterations");
    let n = p.n_models();
    let masks: Vec<ModelSet> = ModelSet::subsets(n).filter(|m| !m.is_empty() && m.len() < n).collect();
    let mut out = vec![0.0; p.stride()];
    for (c, &m) in masks.iter().enumerate() {
        p.predict(m, recording.row(c % recording.len()), &mut out)?;
    }
    let mut times = Vec::with_capacity(iters);
    let mut by_mask: Vec<Vec<f64>> = vec![Vec::with_capacity(iters / masks.len() + 1); masks.len()];
    for it in 0..iters {
        let mi = it % masks.len();
        let row = recording.row(it % recording.len());
        let t0 = Instant::now();
        p.predict(masks[mi], row, &mut out)?;
        let us = t0.elapsed().as_secs_f64() * 1e6;
        std::hint::black_box(&out);
        times.push(us);
        by_mask[mi].push(us);
    }
    let median = |v: &mut Vec<f64>| crate::percentile::percentile_sorting(v, 50.0);
    let mut by_active = vec![(0.0f64, 0u32); n + 1];
    let (mut worst_mask, mut worst_mask_us) = (ModelSet::EMPTY, 0.0);
    for (mi, v) in by_mask.iter_mut().enumerate() {
        if v.is_empty() {
            continue;
        }
        let a = masks[mi].len();
        by_active[a].0 += v.iter().sum::<f64>();
        by_active[a].1 += v.len() as u32;
        let med = median(v);
        if med > worst_mask_us {
            worst_mask_us = med;
            worst_mask = masks[mi];
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let q = |f: f64| crate::percentile::of_sorted(&times, 100.0 * f);
    Ok(BenchStats {
        calls: iters,
        mean_us: mean,
        p50_us: q(0.5),
        p99_us: q(0.99),
        max_us: q(1.0),
        mean_us_by_active: by_active.iter().map(|&(t, c)| if c == 0 { 0.0 } else { t / c as f64 }).collect(),
        worst_mask,
        worst_mask_us,
    })
}
