//! Flat weight arenas for all links and all ensembles of a workload, in the order and layout the CPU
//! predictor and the GPU kernels both read.
//!
//! Ordering: target-major. For target j, its k = n − 1 *source slots* are the other models in model
//! order (slot s is model s for s < j, model s + 1 otherwise). Link index = j·k + s; the links into
//! one target are therefore contiguous in the arena.

use serde::{Deserialize, Serialize};

use super::ensemble::EnsembleDims;
use super::mlp::LinkDims;
use crate::model_set::ModelSet;

/// The first value of `xs` that is NaN or infinite: weights are checked finite where they enter (a
/// bundle, a fleet message), since one NaN weight turns every prediction through it into NaN.
pub fn first_non_finite(xs: &[f32]) -> Option<usize> {
    xs.iter().position(|v| !v.is_finite())
}

/// Model index of source slot `s` of target `j`.
#[inline]
pub fn source_of_slot(j: usize, s: usize) -> usize {
    if s < j { s } else { s + 1 }
}

/// Source slot of model `i` (≠ `j`) for target `j`.
#[inline]
pub fn slot_of_source(j: usize, i: usize) -> usize {
    debug_assert_ne!(i, j);
    if i < j { i } else { i - 1 }
}

/// Every link's parameters in one arena (see [`crate::links::mlp`] for one block's layout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkSet {
    pub n_models: u32,
    /// Per link, in link-index order.
    pub dims: Vec<LinkDims>,
    /// Start of each link's block in `params`, in link-index order.
    pub offsets: Vec<u32>,
    pub params: Vec<f32>,
}

impl LinkSet {
    /// Lay out an arena for `n` models with the given per-link dims (link-index order), zeroed.
    pub fn with_dims(n: usize, dims: Vec<LinkDims>) -> LinkSet {
        let mut offsets = Vec::with_capacity(dims.len());
        let mut at = 0usize;
        for d in &dims {
            offsets.push(at as u32);
            at += d.len();
        }
        LinkSet { n_models: n as u32, dims, offsets, params: vec![0.0; at] }
    }

    pub fn n(&self) -> usize {
        self.n_models as usize
    }

    /// Link index of source model `i` into target `j`.
    #[inline]
    pub fn index(&self, i: usize, j: usize) -> usize {
        j * (self.n() - 1) + slot_of_source(j, i)
    }

    #[inline]
    pub fn block(&self, idx: usize) -> &[f32] {
        let o = self.offsets[idx] as usize;
        &self.params[o..o + self.dims[idx].len()]
    }

    #[inline]
    pub fn block_mut(&mut self, idx: usize) -> &mut [f32] {
        let o = self.offsets[idx] as usize;
        let l = self.dims[idx].len();
        &mut self.params[o..o + l]
    }

    /// Check the arena is consistent with itself and with the model output sizes.
    pub fn validate(&self, sizes: &[usize]) -> Result<(), String> {
        let n = sizes.len();
        if self.n() != n {
            return Err(format!("links are for {} models, bundle has {n}", self.n()));
        }
        let want = n * n.saturating_sub(1);
        if self.dims.len() != want || self.offsets.len() != want {
            return Err(format!(
                "{} links / {} offsets, expected {want}",
                self.dims.len(),
                self.offsets.len()
            ));
        }
        let mut at = 0usize;
        for j in 0..n {
            for s in 0..n - 1 {
                let idx = j * (n - 1) + s;
                let d = self.dims[idx];
                let i = source_of_slot(j, s);
                if d.input as usize != sizes[i] || d.output as usize != sizes[j] || d.hidden == 0 {
                    return Err(format!(
                        "link {i}->{j} has dims {d:?}, sizes are {} -> {}",
                        sizes[i], sizes[j]
                    ));
                }
                if self.offsets[idx] as usize != at {
                    return Err(format!("link {i}->{j} offset {} expected {at}", self.offsets[idx]));
                }
                at += d.len();
            }
        }
        if self.params.len() != at {
            return Err(format!("link arena has {} values, expected {at}", self.params.len()));
        }
        for (idx, d) in self.dims.iter().enumerate() {
            if let Some(k) = first_non_finite(self.block(idx)) {
                let (j, s) = (idx / (n - 1), idx % (n - 1));
                let v = self.block(idx)[k];
                return Err(format!(
                    "link {}->{j}: weight {k} of {} is {v}, not finite",
                    source_of_slot(j, s),
                    d.len()
                ));
            }
        }
        Ok(())
    }
}

/// An ensemble head fitted for one source set of one target, trained with that set always present
/// and kept by `jetlink build` only where it beats the shared head on held-out rows. Its block, of
/// dims [`EnsembleSet::head_dims`] (one source per slot of the set, see
/// [`crate::links::ensemble::compact`]), follows the shared blocks in [`EnsembleSet::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHead {
    pub target: u32,
    /// The target's source slots ([`ModelSet::slots_for`]) this head serves, exactly.
    pub slots: ModelSet,
    pub offset: u32,
}

/// Every target's ensemble parameters in one arena (see [`crate::links::EnsembleDims`] for one
/// block's layout), in target order, then the per-source-set heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleSet {
    pub dims: Vec<EnsembleDims>,
    pub offsets: Vec<u32>,
    pub params: Vec<f32>,
    /// Heads per source set, sorted by (target, slots). The CUDA kernels compute the shared heads
    /// only; [`crate::gpu::LinkExecutor`] predicts on the CPU on a call where one of these applies.
    pub heads: Vec<SetHead>,
}

impl EnsembleSet {
    pub fn with_dims(dims: Vec<EnsembleDims>) -> EnsembleSet {
        let mut offsets = Vec::with_capacity(dims.len());
        let mut at = 0usize;
        for d in &dims {
            offsets.push(at as u32);
            at += d.len();
        }
        EnsembleSet { dims, offsets, params: vec![0.0; at], heads: Vec::new() }
    }

    /// Dims of head `h`'s block: one source per slot of its set.
    #[inline]
    pub fn head_dims(&self, h: usize) -> EnsembleDims {
        let x = &self.heads[h];
        EnsembleDims { sources: x.slots.len() as u32, output: self.dims[x.target as usize].output }
    }

    /// Head `h`'s parameters.
    #[inline]
    pub fn head_block(&self, h: usize) -> &[f32] {
        let o = self.heads[h].offset as usize;
        &self.params[o..o + self.head_dims(h).len()]
    }

    /// Head `h`'s place in the arena.
    #[inline]
    pub fn head_range(&self, h: usize) -> std::ops::Range<usize> {
        let o = self.heads[h].offset as usize;
        o..o + self.head_dims(h).len()
    }

    /// Add a head for `target` and source slots `slots` (call in (target, slots) order).
    pub fn push_head(&mut self, target: usize, slots: ModelSet, block: &[f32]) {
        debug_assert_eq!(
            block.len(),
            EnsembleDims { sources: slots.len() as u32, output: self.dims[target].output }.len()
        );
        let offset = self.params.len() as u32;
        self.params.extend_from_slice(block);
        self.heads.push(SetHead { target: target as u32, slots, offset });
    }

    /// The head for `target` with exactly the source slots `slots`, if one was kept.
    #[inline]
    pub fn head_for(&self, target: usize, slots: ModelSet) -> Option<usize> {
        if self.heads.is_empty() {
            return None;
        }
        self.heads.binary_search_by(|h| (h.target as usize, h.slots).cmp(&(target, slots))).ok()
    }

    /// Values in `target`'s shared block and its heads' blocks.
    pub fn target_len(&self, target: usize) -> usize {
        self.dims[target].len()
            + (0..self.heads.len())
                .filter(|&h| self.heads[h].target as usize == target)
                .map(|h| self.head_dims(h).len())
                .sum::<usize>()
    }

    /// The same weights without per-source-set heads (what the CUDA kernels compute).
    pub fn shared_only(&self) -> EnsembleSet {
        let end = self.dims.iter().map(|d| d.len()).sum();
        EnsembleSet {
            dims: self.dims.clone(),
            offsets: self.offsets.clone(),
            params: self.params[..end].to_vec(),
            heads: Vec::new(),
        }
    }

    #[inline]
    pub fn block(&self, j: usize) -> &[f32] {
        let o = self.offsets[j] as usize;
        &self.params[o..o + self.dims[j].len()]
    }

    #[inline]
    pub fn block_mut(&mut self, j: usize) -> &mut [f32] {
        let o = self.offsets[j] as usize;
        let l = self.dims[j].len();
        &mut self.params[o..o + l]
    }

    pub fn validate(&self, sizes: &[usize]) -> Result<(), String> {
        let n = sizes.len();
        if self.dims.len() != n || self.offsets.len() != n {
            return Err(format!("{} ensembles, expected {n}", self.dims.len()));
        }
        let mut at = 0usize;
        for (j, d) in self.dims.iter().enumerate() {
            if d.sources as usize != n - 1 || d.output as usize != sizes[j] {
                return Err(format!(
                    "ensemble {j} has dims {d:?}, expected {} sources of size {}",
                    n - 1,
                    sizes[j]
                ));
            }
            if self.offsets[j] as usize != at {
                return Err(format!("ensemble {j} offset {} expected {at}", self.offsets[j]));
            }
            at += d.len();
        }
        for (x, h) in self.heads.iter().enumerate() {
            let j = h.target as usize;
            if j >= n || h.slots.is_empty() || h.slots.exceeds(n - 1) {
                return Err(format!(
                    "set head {x}: target {j} with source slots {} does not fit {n} models",
                    h.slots
                ));
            }
            if x > 0 && (self.heads[x - 1].target, self.heads[x - 1].slots) >= (h.target, h.slots) {
                return Err(format!("set head {x}: heads must be sorted by (target, slots), each once"));
            }
            if h.offset as usize != at {
                return Err(format!("set head {x} offset {} expected {at}", h.offset));
            }
            at += self.head_dims(x).len();
        }
        if self.params.len() != at {
            return Err(format!("ensemble arena has {} values, expected {at}", self.params.len()));
        }
        for j in 0..n {
            if let Some(k) = first_non_finite(self.block(j)) {
                return Err(format!("ensemble {j}: weight {k} is {}, not finite", self.block(j)[k]));
            }
        }
        for (x, h) in self.heads.iter().enumerate() {
            let b = self.head_block(x);
            if let Some(k) = first_non_finite(b) {
                return Err(format!(
                    "set head {x} (target {}): weight {k} is {}, not finite",
                    h.target, b[k]
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_masks() {
        for j in 0..5 {
            for i in (0..5).filter(|&i| i != j) {
                assert_eq!(source_of_slot(j, slot_of_source(j, i)), i);
            }
        }
    }
}
