//! Global and local links on one board: the weights of one target in the arenas, the federated
//! average, and the fusion of a global update with the board's own links.
//!
//! Fusion is per target: the board's links into target j become β·local + (1 − β)·global, weights
//! and ensemble alike, with β ∈ {1, ¾, ½, ¼, 0} chosen by agreement on the board's own labelled
//! rows. One side is the default and a mix replaces it only when it agrees on at least
//! [`MIN_GAIN_ROWS`] more of those rows: a handful of rows cannot tell small differences apart. The
//! default is the board's own links, except for a group's update ([`Trust::Group`]) that the other
//! boards back with more samples than the board's own for that target: the group's boards share
//! this board's conditions, so their average is the better bet when the rows cannot tell. Both
//! sides descend from the same bundle by fine-tuning, which is what makes the average and the mix
//! meaningful. A target without
//! labelled rows takes the global links when the board has no local samples for it, and keeps its
//! own otherwise. The mix is in weight space, so the tick's cost does not change (the paper mixes
//! the two predictions through the ensemble layer, which would double the link work per tick).

use crate::links::{EnsembleSet, LinkSet, Predictor, agreement};
use crate::manifest::OutputKind;
use crate::model_set::ModelSet;

use super::msg::{GlobalError, GlobalLinks, LinkUpdate, TargetDelta, TargetLinks};
use super::quant::Quantized;

/// Local shares tried, local first (against a group's links, [`fuse`] tries them the other way).
pub const BETAS: [f32; 5] = [1.0, 0.75, 0.5, 0.25, 0.0];

/// A mix replaces the default only when it agrees on at least this many more labelled rows.
pub const MIN_GAIN_ROWS: f32 = 2.0;

/// Where a global update comes from, for [`fuse`]: the whole fleet's average, or the average of the
/// board's group (boards that share its conditions; [`super::FleetConfig::group`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    Fleet,
    Group,
}

/// Range of target `j`'s links in the link arena (its n − 1 links are contiguous).
pub fn link_range(links: &LinkSet, j: usize) -> std::ops::Range<usize> {
    let k = links.n() - 1;
    let first = j * k;
    let last = first + k - 1;
    links.offsets[first] as usize..links.offsets[last] as usize + links.dims[last].len()
}

/// Range of target `j`'s ensemble block.
pub fn ensemble_range(ens: &EnsembleSet, j: usize) -> std::ops::Range<usize> {
    let o = ens.offsets[j] as usize;
    o..o + ens.dims[j].len()
}

/// Target `j`'s weights, with `samples` behind them.
pub fn target_links(p: &Predictor, j: usize, samples: u32) -> TargetLinks {
    TargetLinks {
        target: j as u8,
        samples,
        links: p.links.params[link_range(&p.links, j)].to_vec(),
        ensemble: p.ensembles.params[ensemble_range(&p.ensembles, j)].to_vec(),
    }
}

/// Per target, how many link and ensemble weights it has in these arenas: the shape every update
/// for this bundle must have.
pub fn target_shapes(links: &LinkSet, ens: &EnsembleSet) -> Vec<(usize, usize)> {
    (0..links.n()).map(|j| (link_range(links, j).len(), ensemble_range(ens, j).len())).collect()
}

/// Write `targets` whole into `p`'s arenas (checked first).
pub fn put_targets(p: &mut Predictor, targets: &[TargetLinks]) -> Result<(), GlobalError> {
    check_shape(p, targets)?;
    for t in targets {
        let j = t.target as usize;
        let (l, e) = (link_range(&p.links, j), ensemble_range(&p.ensembles, j));
        p.links.params[l].copy_from_slice(&t.links);
        p.ensembles.params[e].copy_from_slice(&t.ensemble);
    }
    Ok(())
}

/// Check that every target of `g` fits the arenas of `p`.
pub fn check_shape(p: &Predictor, targets: &[TargetLinks]) -> Result<(), GlobalError> {
    let shape = target_shapes(&p.links, &p.ensembles);
    for t in targets {
        t.check(Some(&shape)).map_err(GlobalError::Shape)?;
    }
    Ok(())
}

/// One round of the aggregator's whole weights: `held` (what boards hold, by target) moves to the
/// round's averages `new`. Returns what takes a board from the old `held` to the new one: deltas for
/// the targets `held` has (4 bits a value), whole weights for those it does not have yet (or whose
/// shape changed). The new `held` is the old plus the dequantised deltas, exactly what a board
/// computes, so quantisation errors never add up over rounds.
pub fn advance(held: &mut Vec<TargetLinks>, new: &[TargetLinks]) -> (Vec<TargetDelta>, Vec<TargetLinks>) {
    let (mut deltas, mut whole) = (Vec::new(), Vec::new());
    for t in new {
        let same_shape = |h: &&mut TargetLinks| {
            h.target == t.target && h.links.len() == t.links.len() && h.ensemble.len() == t.ensemble.len()
        };
        match held.iter_mut().find(|h| h.target == t.target).filter(same_shape) {
            Some(h) => {
                let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<f32>>();
                let links = Quantized::new(&diff(&t.links, &h.links));
                let ensemble = Quantized::new(&diff(&t.ensemble, &h.ensemble));
                links.add_to(&mut h.links).expect("same length");
                ensemble.add_to(&mut h.ensemble).expect("same length");
                h.samples = t.samples;
                deltas.push(TargetDelta { target: t.target, samples: t.samples, links, ensemble });
            }
            None => {
                held.retain(|h| h.target != t.target);
                held.push(t.clone());
                whole.push(t.clone());
            }
        }
    }
    held.sort_by_key(|h| h.target);
    (deltas, whole)
}

/// Federated averaging: per target, the mean of the boards' weights weighted by their samples.
/// `updates` are taken in board-name order (the result does not depend on arrival order). Updates
/// whose weights do not have the first one's shape for a target are left out of that target.
pub fn fedavg(updates: &[&LinkUpdate]) -> (Vec<TargetLinks>, u32) {
    let mut ups: Vec<&LinkUpdate> = updates.to_vec();
    ups.sort_by(|a, b| a.board.cmp(&b.board));
    let mut out: Vec<TargetLinks> = Vec::new();
    // Sample sums in u64: bounded counts (MAX_SAMPLES) from many boards exceed a u32.
    let mut samples: Vec<u64> = Vec::new();
    let mut boards = std::collections::BTreeSet::new();
    for u in &ups {
        for t in u.targets.iter().filter(|t| t.samples > 0) {
            let at = match out.iter().position(|o| o.target == t.target) {
                Some(i) => i,
                None => {
                    out.push(TargetLinks {
                        target: t.target,
                        samples: 0,
                        links: vec![0.0; t.links.len()],
                        ensemble: vec![0.0; t.ensemble.len()],
                    });
                    samples.push(0);
                    out.len() - 1
                }
            };
            let o = &mut out[at];
            if o.links.len() != t.links.len() || o.ensemble.len() != t.ensemble.len() {
                continue;
            }
            samples[at] += t.samples as u64;
            let w = t.samples as f32;
            for (a, b) in o.links.iter_mut().zip(&t.links) {
                *a += w * b;
            }
            for (a, b) in o.ensemble.iter_mut().zip(&t.ensemble) {
                *a += w * b;
            }
            boards.insert(u.board.as_str());
        }
    }
    for (o, &n) in out.iter_mut().zip(&samples) {
        o.samples = n.min(u32::MAX as u64) as u32;
        let inv = 1.0 / n.max(1) as f32;
        o.links.iter_mut().for_each(|v| *v *= inv);
        o.ensemble.iter_mut().for_each(|v| *v *= inv);
    }
    out.sort_by_key(|o| o.target);
    (out, boards.len() as u32)
}

/// Write β·local + (1 − β)·global for target `t.target` into `p` (whose weights are the local ones
/// in `local`).
fn mix_into(p: &mut Predictor, local: &Predictor, t: &TargetLinks, beta: f32) {
    let j = t.target as usize;
    let lr = link_range(&p.links, j);
    for ((d, l), g) in p.links.params[lr.clone()].iter_mut().zip(&local.links.params[lr]).zip(&t.links) {
        *d = beta * l + (1.0 - beta) * g;
    }
    let er = ensemble_range(&p.ensembles, j);
    for ((d, l), g) in
        p.ensembles.params[er.clone()].iter_mut().zip(&local.ensembles.params[er]).zip(&t.ensemble)
    {
        *d = beta * l + (1.0 - beta) * g;
    }
}

/// Mean agreement of target `j` predicted from the other valid models, over the rows that hold j
/// and at least one other model. `None` without such rows.
pub fn target_agreement(
    p: &mut Predictor,
    kinds: &[OutputKind],
    scorings: &[crate::scoring::Scoring],
    j: usize,
    rows: &[f32],
    valid: &[ModelSet],
    out: &mut [f32],
) -> Option<f32> {
    target_agreement_n(p, kinds, scorings, j, rows, valid, out).map(|(a, _)| a)
}

/// [`target_agreement`] and the number of rows it was measured on.
fn target_agreement_n(
    p: &mut Predictor,
    kinds: &[OutputKind],
    scorings: &[crate::scoring::Scoring],
    j: usize,
    rows: &[f32],
    valid: &[ModelSet],
    out: &mut [f32],
) -> Option<(f32, u32)> {
    let stride = p.stride();
    let r = p.layout().range(j);
    let (mut sum, mut n) = (0.0f32, 0u32);
    for (row, &v) in rows.chunks_exact(stride).zip(valid) {
        let sources = v.without(j);
        if !v.contains(j) || sources.is_empty() {
            continue;
        }
        if p.predict(sources, row, out).is_ok() {
            sum += agreement(kinds[j], scorings[j], &out[r.clone()], &row[r.clone()]);
            n += 1;
        }
    }
    (n > 0).then(|| (sum / n as f32, n))
}

/// The outcome of fusing one global update.
#[derive(Clone, Debug, PartialEq)]
pub struct Fused {
    /// Per target of the update: (target, β chosen, agreement with β, agreement local-only).
    pub choices: Vec<(u8, f32, Option<f32>, Option<f32>)>,
}

/// Fuse `g` into `p` (the board's local links): per target, the β with the best agreement on the
/// board's labelled rows (`rows`, `valid`), the default winning ties; see the module docs.
/// `local_samples[j]` are the board's own labelled samples for target j; `trust` says where `g`
/// comes from.
#[allow(clippy::too_many_arguments)]
pub fn fuse(
    p: &mut Predictor,
    g: &GlobalLinks,
    kinds: &[OutputKind],
    scorings: &[crate::scoring::Scoring],
    rows: &[f32],
    valid: &[ModelSet],
    local_samples: &[u32],
    trust: Trust,
) -> Result<Fused, GlobalError> {
    check_shape(p, &g.targets)?;
    let local = p.clone();
    let mut out = vec![0.0; p.stride()];
    let mut choices = Vec::new();
    for t in &g.targets {
        let j = t.target as usize;
        let own = local_samples.get(j).copied().unwrap_or(0);
        let measured = target_agreement_n(p, kinds, scorings, j, rows, valid, &mut out);
        let base = measured.map(|m| m.0);
        let (mut best, mut best_a) = (1.0f32, base);
        match measured {
            None => {
                if own == 0 {
                    best = 0.0;
                    best_a = None;
                }
            }
            Some((a0, n)) => {
                // The default first: the board's own links, or a group's that the other boards back
                // with more samples than its own (the group's count includes the board's).
                let global_first = trust == Trust::Group && t.samples.saturating_sub(own) > own;
                let mut order = BETAS;
                if global_first {
                    order.reverse();
                }
                let mut bar = f32::NEG_INFINITY;
                for (i, &beta) in order.iter().enumerate() {
                    let a = if beta == 1.0 {
                        Some(a0)
                    } else {
                        mix_into(p, &local, t, beta);
                        target_agreement(p, kinds, scorings, j, rows, valid, &mut out)
                    };
                    let Some(a) = a else { continue };
                    if i == 0 {
                        (best, best_a, bar) = (beta, Some(a), a + MIN_GAIN_ROWS / n as f32 - 1e-6);
                    } else if a >= bar {
                        (best, best_a, bar) = (beta, Some(a), a + 1e-6);
                    }
                }
            }
        }
        mix_into(p, &local, t, best);
        choices.push((t.target, best, best_a, base));
    }
    Ok(Fused { choices })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::msg::FLEET_PROTO;

    fn up(board: &str, samples: u32, v: f32) -> LinkUpdate {
        LinkUpdate {
            proto: FLEET_PROTO,
            board: board.into(),
            group: None,
            model_hash: [0; 8],
            seq: 0,
            base_version: 0,
            targets: vec![TargetLinks { target: 2, samples, links: vec![v; 3], ensemble: vec![v] }],
        }
    }

    #[test]
    fn fedavg_weights_by_samples_and_ignores_order() {
        let (a, b, c) = (up("a", 1, 0.0), up("b", 3, 4.0), up("c", 0, 100.0));
        let (g, boards) = fedavg(&[&a, &b, &c]);
        assert_eq!(boards, 2);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].samples, 4);
        assert_eq!(g[0].links, vec![3.0; 3]);
        assert_eq!(fedavg(&[&b, &c, &a]).0, g);
    }
}
