//! The device-side description of a bundle's links: the descriptor tables and shared-memory sizes
//! that `kernels/links.cu` reads, built once on the host from a [`LinkSet`] and an [`EnsembleSet`].
//! Pure Rust, so it is tested without a GPU.

use crate::links::{EnsembleSet, LinkSet, MAX_MODELS};
use crate::manifest::OutputKind;

/// Kind codes the kernels switch on (`KIND_*` in `kernels/links.cu`).
pub fn kind_code(kind: OutputKind) -> u32 {
    match kind {
        OutputKind::Class => 0,
        OutputKind::Multilabel => 1,
        _ => 2,
    }
}

/// Why a bundle cannot be laid out for the kernels.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error("{0} models: the kernels handle 2 to {MAX_MODELS}")]
    ModelCount(usize),
    #[error("links do not match the models: {0}")]
    Links(String),
    #[error("ensembles do not match the models: {0}")]
    Ensembles(String),
    #[error("the arenas hold {0} values, more than a u32 offset can address")]
    TooLarge(usize),
}

/// Descriptor tables and per-target scratch sizes (in `f32`), in the kernels' order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLayout {
    pub n: u32,
    /// Values per row (all models' outputs).
    pub stride: u32,
    /// `4·m + {0,1,2,3}` = row offset, output size, kind code, ensemble block offset.
    pub models: Vec<u32>,
    /// `4·l + {0,1,2,3}` = parameter block offset, input, hidden, output (l = j·k + slot).
    pub links: Vec<u32>,
    /// Largest Σ input over one target's links (normalised inputs).
    pub max_x: u32,
    /// Largest Σ hidden over one target's links (hidden activations).
    pub max_a: u32,
    /// Largest k·|Y_j| (link outputs; the ensemble's per-slot products take as much again).
    pub max_z: u32,
    /// Largest |Y_j|.
    pub max_y: u32,
    /// Start of each target's k·|Y_j| link outputs in the unfused path's z buffer; last = total.
    pub z_off: Vec<u32>,
}

impl DeviceLayout {
    pub fn new(
        kinds: &[OutputKind],
        sizes: &[usize],
        links: &LinkSet,
        ensembles: &EnsembleSet,
    ) -> Result<DeviceLayout, LayoutError> {
        let n = sizes.len();
        if !(2..=MAX_MODELS).contains(&n) || kinds.len() != n {
            return Err(LayoutError::ModelCount(n));
        }
        links.validate(sizes).map_err(LayoutError::Links)?;
        ensembles.validate(sizes).map_err(LayoutError::Ensembles)?;
        let big = links.params.len().max(ensembles.params.len());
        if big > u32::MAX as usize / 2 {
            return Err(LayoutError::TooLarge(big));
        }
        let k = n - 1;
        let mut models = Vec::with_capacity(4 * n);
        let mut row = 0u32;
        for j in 0..n {
            models.extend([row, sizes[j] as u32, kind_code(kinds[j]), ensembles.offsets[j]]);
            row += sizes[j] as u32;
        }
        let mut descs = Vec::with_capacity(4 * n * k);
        for (d, &o) in links.dims.iter().zip(&links.offsets) {
            descs.extend([o, d.input, d.hidden, d.output]);
        }
        let (mut max_x, mut max_a, mut max_z, mut max_y) = (0, 0, 0, 0);
        let mut z_off = Vec::with_capacity(n + 1);
        let mut z = 0u32;
        for (j, &size) in sizes.iter().enumerate() {
            let dims = &links.dims[j * k..(j + 1) * k];
            max_x = max_x.max(dims.iter().map(|d| d.input).sum());
            max_a = max_a.max(dims.iter().map(|d| d.hidden).sum());
            max_z = max_z.max((k * size) as u32);
            max_y = max_y.max(size as u32);
            z_off.push(z);
            z += (k * size) as u32;
        }
        z_off.push(z);
        Ok(DeviceLayout { n: n as u32, stride: row, models, links: descs, max_x, max_a, max_z, max_y, z_off })
    }

    /// Dynamic shared memory of the fused kernel, in bytes.
    pub fn fused_shared_bytes(&self) -> usize {
        4 * (self.max_x + self.max_a + 2 * self.max_z + self.max_y) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::{EnsembleDims, LinkDims};

    #[test]
    fn tables_follow_the_arenas() {
        let sizes = [3usize, 2, 4];
        let kinds = [OutputKind::Class, OutputKind::Multilabel, OutputKind::Box];
        let mut dims = Vec::new();
        for j in 0..3 {
            for s in 0..2 {
                let i = crate::links::source_of_slot(j, s);
                dims.push(LinkDims::new(sizes[i], 5 + j, sizes[j]));
            }
        }
        let links = LinkSet::with_dims(3, dims);
        let ens = EnsembleSet::with_dims(
            sizes.iter().map(|&s| EnsembleDims { sources: 2, output: s as u32 }).collect(),
        );
        let l = DeviceLayout::new(&kinds, &sizes, &links, &ens).unwrap();
        assert_eq!(l.stride, 9);
        assert_eq!(&l.models[..8], &[0, 3, 0, 0, 3, 2, 1, ens.offsets[1]]);
        assert_eq!(l.models[10], 2);
        assert_eq!(&l.links[4..8], &[links.offsets[1], 4, 5, 3]);
        // Target 2 reads models 0 and 1 (3 + 2 inputs), hidden 7 each, 2·4 outputs.
        assert_eq!((l.max_x, l.max_a, l.max_z, l.max_y), (7, 14, 8, 4));
        assert_eq!(l.z_off, vec![0, 6, 10, 18]);
        assert!(DeviceLayout::new(&kinds[..2], &sizes, &links, &ens).is_err());
    }
}
