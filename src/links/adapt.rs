//! On-line adaptation: fine-tune the links into one target (and its ensemble) on a small batch of
//! fresh pairs, in place in a [`Predictor`]'s weights. The [`Adapter`] owns every buffer (gradients,
//! RMSprop state for every link and ensemble, per-batch link outputs), allocated once; a step never
//! allocates. Dropout is off during adaptation (a handful of samples, a few steps); the input
//! normalisation stays as trained.

use super::ensemble;
use super::mlp::{self, Loss, RmsProp, Scratch};
use super::options::{RegressionLoss, prepare_target};
use super::predict::Predictor;
use super::tying::StepTie;
use super::weights::source_of_slot;
use super::{LinkError, LinkModel};
use crate::model_set::ModelSet;

/// Adaptation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptOptions {
    /// RMSprop learning rate for the links (smaller than training: a step starts with fresh RMSprop
    /// state, whose first update is about 3·lr per weight).
    pub lr: f32,
    pub ensemble_lr: f32,
    /// Largest batch a step accepts (sizes the workspace).
    pub max_batch: usize,
    /// Also update the ensemble weights.
    pub ensemble: bool,
}

impl Default for AdaptOptions {
    fn default() -> AdaptOptions {
        AdaptOptions { lr: 1e-3, ensemble_lr: 5e-4, max_batch: 64, ensemble: true }
    }
}

/// Losses of one adaptation step, measured on its batch before the corresponding update.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AdaptStats {
    /// Mean loss of the updated links.
    pub link_loss: f32,
    /// Ensemble loss (after the link updates, before the ensemble update).
    pub ensemble_loss: f32,
    pub links: u32,
}

/// Workspace for fine-tuning links and ensembles in place.
#[derive(Clone, Debug)]
pub struct Adapter {
    opts: AdaptOptions,
    losses: Vec<Loss>,
    v_links: Vec<f32>,
    v_ens: Vec<f32>,
    g: Vec<f32>,
    ge: Vec<f32>,
    scratch: Scratch,
    /// Per batch row, k·max_out link outputs.
    zb: Vec<f32>,
    /// A set head's input on one row: its slots' outputs gathered, k·max_out.
    zc: Vec<f32>,
    t: Vec<f32>,
    /// A source's link input where it differs from its output (`links::source_input`).
    x: Vec<f32>,
    u: Vec<f32>,
    y: Vec<f32>,
    dy: Vec<f32>,
    /// Per link (link-index order), its position tying when the link holds one
    /// ([`super::tying`]): its gradient is tied before each step, so the tie survives adaptation.
    ties: Vec<Option<StepTie>>,
    tie_scratch: Vec<f32>,
}

/// The tying link `idx` of `links` holds, if any: a link between two symbol sequences built tied
/// (its shape and its weights say so).
fn tie_of(
    links: &super::LinkSet,
    kinds: &[crate::manifest::OutputKind],
    sizes: &[usize],
    idx: usize,
) -> Option<StepTie> {
    let k = links.n() - 1;
    let (j, i) = (idx / k, source_of_slot(idx / k, idx % k));
    let d = links.dims[idx];
    let tie = StepTie::between(kinds[i], sizes[i], kinds[j], sizes[j], 1)?;
    let tie = tie.with_width(d.hidden as usize / tie.positions());
    (tie.dims() == d && tie.holds(links.block(idx))).then_some(tie)
}

impl Adapter {
    /// Allocate the workspace for `predictor` (which was prepared from `bundle`).
    pub fn new(bundle: &impl LinkModel, predictor: &Predictor, opts: AdaptOptions) -> Adapter {
        let reg = match bundle.train_options().regression_loss {
            RegressionLoss::Mse => Loss::Mse,
            RegressionLoss::Mae => Loss::Mae,
        };
        let links = predictor.links();
        let ens = predictor.ensembles();
        let n = predictor.n_models();
        let max_out = bundle.layout().sizes().iter().copied().max().unwrap_or(1);
        let max_h = links.dims.iter().map(|d| d.hidden as usize).max().unwrap_or(1);
        let (kinds, sizes) = (bundle.kinds(), bundle.layout().sizes().to_vec());
        let ties: Vec<Option<StepTie>> =
            (0..links.dims.len()).map(|idx| tie_of(links, &kinds, &sizes, idx)).collect();
        let tie_scratch = vec![0.0; ties.iter().flatten().map(StepTie::scratch_len).max().unwrap_or(0)];
        Adapter {
            opts,
            losses: bundle.kinds().into_iter().map(|k| Loss::for_kind(k, reg)).collect(),
            v_links: vec![0.0; links.params.len()],
            v_ens: vec![0.0; ens.params.len()],
            g: vec![0.0; links.dims.iter().map(|d| d.len()).max().unwrap_or(0)],
            ge: vec![0.0; ens.dims.iter().map(|d| d.len()).max().unwrap_or(0)],
            scratch: Scratch::new(max_out, max_h, max_out),
            zb: vec![0.0; opts.max_batch * (n - 1) * max_out],
            zc: vec![0.0; (n - 1) * max_out],
            t: vec![0.0; max_out],
            x: vec![0.0; max_out],
            u: vec![0.0; (n - 1) * max_out],
            y: vec![0.0; max_out],
            dy: vec![0.0; max_out],
            ties,
            tie_scratch,
        }
    }

    fn check(
        &self,
        p: &Predictor,
        target: usize,
        sources: ModelSet,
        rows: &[f32],
    ) -> Result<(usize, ModelSet), LinkError> {
        let n = p.n_models();
        if target >= n {
            return Err(LinkError::BadModel { index: target, models: n });
        }
        p.check_mask(sources)?;
        let stride = p.stride();
        if rows.is_empty() || !rows.len().is_multiple_of(stride) || rows.len() / stride > self.opts.max_batch
        {
            return Err(LinkError::BadBatch { got: rows.len(), max: self.opts.max_batch });
        }
        let sources = sources.without(target);
        if sources.is_empty() {
            return Err(LinkError::NoSources { target });
        }
        Ok((rows.len() / stride, sources))
    }

    /// One fine-tuning step on a batch: every link from a model in `sources` into `target` takes one
    /// RMSprop step on the batch's mean loss, then (optionally) the target's ensemble takes one step
    /// with the source subset `sources`. `rows` are recording rows (`batch × stride`) in which the
    /// target's and the sources' slices are valid.
    pub fn step(
        &mut self,
        p: &mut Predictor,
        target: usize,
        sources: ModelSet,
        rows: &[f32],
    ) -> Result<AdaptStats, LinkError> {
        let (batch, sources) = self.check(p, target, sources, rows)?;
        let stride = p.stride();
        let n = p.n_models();
        let k = n - 1;
        let (kind, loss) = (p.kind(target), self.losses[target]);
        let tj = p.slice(target);
        let no = tj.len();
        let inv_b = 1.0 / batch as f32;
        let (mut link_loss, mut count) = (0.0f32, 0u32);
        for s in 0..k {
            let i = source_of_slot(target, s);
            if !sources.contains(i) {
                continue;
            }
            let idx = target * k + s;
            let d = p.links.dims[idx];
            let si = p.slice(i);
            let g = &mut self.g[..d.len()];
            g.fill(0.0);
            let mut l = 0.0;
            for r in 0..batch {
                let row = &rows[r * stride..(r + 1) * stride];
                let t = &mut self.t[..no];
                t.copy_from_slice(&row[tj.clone()]);
                prepare_target(kind, t);
                let x = super::source_input(p.kind(i), &row[si.clone()], &mut self.x);
                l += mlp::accumulate_grad(
                    d,
                    p.links.block(idx),
                    loss,
                    x,
                    t,
                    inv_b,
                    None,
                    &mut self.scratch,
                    g,
                );
            }
            if let Some(tie) = &self.ties[idx] {
                tie.tie_gradient_in(g, &mut self.tie_scratch);
            }
            link_loss += l * inv_b;
            count += 1;
            let off = p.links.offsets[idx] as usize;
            let ts = d.trainable_start();
            RmsProp::new(self.opts.lr).step(
                &mut p.links.block_mut(idx)[ts..],
                &g[ts..],
                &mut self.v_links[off + ts..off + d.len()],
            );
        }
        let ensemble_loss = self.ensemble_pass(p, target, sources, rows, batch, true)?;
        Ok(AdaptStats { link_loss: link_loss / count as f32, ensemble_loss, links: count })
    }

    /// Mean ensemble loss of `target` on a batch with source subset `sources`, current weights.
    pub fn loss(
        &mut self,
        p: &mut Predictor,
        target: usize,
        sources: ModelSet,
        rows: &[f32],
    ) -> Result<f32, LinkError> {
        let (batch, sources) = self.check(p, target, sources, rows)?;
        self.ensemble_pass(p, target, sources, rows, batch, false)
    }

    /// Link outputs for the batch, the ensemble loss and, when `update`, one ensemble step.
    fn ensemble_pass(
        &mut self,
        p: &mut Predictor,
        target: usize,
        sources: ModelSet,
        rows: &[f32],
        batch: usize,
        update: bool,
    ) -> Result<f32, LinkError> {
        let stride = p.stride();
        let k = p.n_models() - 1;
        let (kind, loss) = (p.kind(target), self.losses[target]);
        let tj = p.slice(target);
        let no = tj.len();
        let width = k * no;
        for r in 0..batch {
            let row = &rows[r * stride..(r + 1) * stride];
            for s in 0..k {
                let i = source_of_slot(target, s);
                if !sources.contains(i) {
                    continue;
                }
                let idx = target * k + s;
                let si = p.slice(i);
                let x = super::source_input(p.kind(i), &row[si], &mut self.x);
                mlp::forward(
                    p.links.dims[idx],
                    p.links.block(idx),
                    x,
                    &mut self.scratch.xn,
                    &mut self.scratch.a,
                    &mut self.zb[r * width + s * no..r * width + (s + 1) * no],
                );
            }
        }
        let mask = sources.slots_for(target);
        // The block that predicts `target` from these sources: its set head where one was kept
        // (fed the set's outputs gathered), else the shared head.
        let head = p.ensembles.head_for(target, mask);
        let (ed, er, set) = match head {
            Some(h) => (p.ensembles.head_dims(h), p.ensembles.head_range(h), ModelSet::all(mask.len())),
            None => {
                let o = p.ensembles.offsets[target] as usize;
                (p.ensembles.dims[target], o..o + p.ensembles.dims[target].len(), mask)
            }
        };
        let ge = &mut self.ge[..ed.len()];
        ge.fill(0.0);
        let inv_b = 1.0 / batch as f32;
        let mut l = 0.0;
        for r in 0..batch {
            let row = &rows[r * stride..(r + 1) * stride];
            let t = &mut self.t[..no];
            t.copy_from_slice(&row[tj.clone()]);
            prepare_target(kind, t);
            let z = &self.zb[r * width..(r + 1) * width];
            let z = if head.is_some() {
                let zc = &mut self.zc[..mask.len() * no];
                ensemble::gather(no, z, mask, zc);
                &*zc
            } else {
                z
            };
            l += ensemble::accumulate_grad(
                ed,
                &p.ensembles.params[er.clone()],
                loss,
                z,
                set,
                t,
                inv_b,
                &mut self.u,
                &mut self.y,
                &mut self.dy,
                ge,
            );
        }
        if update && self.opts.ensemble {
            RmsProp::new(self.opts.ensemble_lr).step(
                &mut p.ensembles.params[er.clone()],
                ge,
                &mut self.v_ens[er],
            );
        }
        Ok(l * inv_b)
    }
}
