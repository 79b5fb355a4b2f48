//! The layout of one row of model outputs: every model's output vector, in model order, back to
//! back. One type owns the offsets, so the recording, the predictor, the loop, the adapter and the
//! benchmarks cannot disagree about where a model's output lives.

use std::ops::Range;

/// Offsets and sizes of each model's output inside a row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowLayout {
    offsets: Vec<usize>,
    sizes: Vec<usize>,
    stride: usize,
}

impl RowLayout {
    /// From each model's output size, in model order.
    pub fn new(sizes: impl IntoIterator<Item = usize>) -> RowLayout {
        let sizes: Vec<usize> = sizes.into_iter().collect();
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for &s in &sizes {
            offsets.push(at);
            at += s;
        }
        RowLayout { offsets, sizes, stride: at }
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Values in one row.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Where model `m`'s output lives in a row.
    #[inline]
    pub fn range(&self, m: usize) -> Range<usize> {
        self.offsets[m]..self.offsets[m] + self.sizes[m]
    }

    /// The model whose output holds value `k` of a row (`k < stride`).
    pub fn model_of(&self, k: usize) -> usize {
        self.offsets.partition_point(|&o| o <= k).saturating_sub(1)
    }

    pub fn offset(&self, m: usize) -> usize {
        self.offsets[m]
    }

    pub fn size(&self, m: usize) -> usize {
        self.sizes[m]
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
}

#[cfg(test)]
mod tests {
    use super::RowLayout;

    #[test]
    fn offsets_follow_sizes() {
        let l = RowLayout::new([10, 2, 1]);
        assert_eq!((l.len(), l.stride()), (3, 13));
        assert_eq!(l.range(0), 0..10);
        assert_eq!(l.range(1), 10..12);
        assert_eq!(l.range(2), 12..13);
        assert!(RowLayout::new([]).is_empty());
    }
}
