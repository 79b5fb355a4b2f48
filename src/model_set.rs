//! A set of models by index: the one type for which models run, are predicted, are held or are
//! resident, with the one cap ([`ModelSet::CAP`]) that links, schedules, DCTA, the loop and the wire
//! share. A target's source-slot set (see [`ModelSet::slots_for`]) uses the same type.
//!
//! Hand-written rather than a bit-set crate: it is a `Copy` 16-bit word that the loop passes by
//! value every tick, serialises exactly as the `u16` the wire and older bundles hold, and indexes
//! the per-target subset tables directly (`bits()`); crates such as `bitvec` or `fixedbitset`
//! allocate or carry a length.

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// A set of model indices below [`ModelSet::CAP`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelSet(u16);

impl ModelSet {
    /// The most models a workload may have, everywhere: links, schedules, DCTA, the loop, the wire.
    pub const CAP: usize = 16;
    pub const EMPTY: ModelSet = ModelSet(0);

    /// The set whose bit `i` is set for every model `i` in it.
    pub const fn from_bits(bits: u16) -> ModelSet {
        ModelSet(bits)
    }

    /// From a wider word (a file or an older API); `None` when a bit at or above the cap is set.
    pub fn try_from_u64(bits: u64) -> Option<ModelSet> {
        u16::try_from(bits).ok().map(ModelSet)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The bits as an index (subset tables are indexed by the set).
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Models `0..n` (`n` at most [`Self::CAP`]).
    pub fn all(n: usize) -> ModelSet {
        debug_assert!(n <= Self::CAP, "{n} models: the cap is {}", Self::CAP);
        if n >= Self::CAP { ModelSet(u16::MAX) } else { ModelSet(((1u32 << n) - 1) as u16) }
    }

    /// The set holding only model `i`.
    pub fn single(i: usize) -> ModelSet {
        assert!(i < Self::CAP, "model {i}: a set holds models 0..{}", Self::CAP);
        ModelSet(1 << i)
    }

    pub const fn contains(self, i: usize) -> bool {
        i < Self::CAP && self.0 >> i & 1 == 1
    }

    pub fn with(self, i: usize) -> ModelSet {
        self | ModelSet::single(i)
    }

    pub fn without(self, i: usize) -> ModelSet {
        self - ModelSet::single(i)
    }

    pub fn insert(&mut self, i: usize) {
        *self = self.with(i);
    }

    pub fn remove(&mut self, i: usize) {
        *self = self.without(i);
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn is_subset(self, of: ModelSet) -> bool {
        self.0 & !of.0 == 0
    }

    /// The models of `0..n` not in the set.
    pub fn complement(self, n: usize) -> ModelSet {
        ModelSet::all(n) - self
    }

    /// Whether a model at or above `n` is in the set.
    pub fn exceeds(self, n: usize) -> bool {
        !self.is_subset(ModelSet::all(n))
    }

    /// The lowest model in the set.
    pub fn first(self) -> Option<usize> {
        (self.0 != 0).then(|| self.0.trailing_zeros() as usize)
    }

    /// The models in the set, in index order.
    pub fn iter(self) -> Iter {
        Iter(self.0)
    }

    /// Every subset of models `0..n`, in bit order (the empty set first).
    pub fn subsets(n: usize) -> impl Iterator<Item = ModelSet> {
        (0..=ModelSet::all(n).0 as u32).map(|b| ModelSet(b as u16))
    }

    /// Every subset of this set, this set first and the empty set last.
    pub fn subsets_of(self) -> impl Iterator<Item = ModelSet> {
        std::iter::successors(Some(self), move |q| {
            (!q.is_empty()).then(|| ModelSet(q.0.wrapping_sub(1) & self.0))
        })
    }

    /// Target `j`'s source-slot set: model `j` dropped and the higher models shifted down one, so
    /// slot `s` is model `s` below `j` and model `s + 1` from `j` on. This is also the index into
    /// the target's subset score table.
    pub fn slots_for(self, j: usize) -> ModelSet {
        let b = self.0 as u32;
        let low = b & ((1u32 << j) - 1);
        let high = (b >> (j + 1)) << j;
        ModelSet((low | high) as u16)
    }
}

impl BitOr for ModelSet {
    type Output = ModelSet;
    fn bitor(self, o: ModelSet) -> ModelSet {
        ModelSet(self.0 | o.0)
    }
}

impl BitOrAssign for ModelSet {
    fn bitor_assign(&mut self, o: ModelSet) {
        self.0 |= o.0;
    }
}

impl BitAnd for ModelSet {
    type Output = ModelSet;
    fn bitand(self, o: ModelSet) -> ModelSet {
        ModelSet(self.0 & o.0)
    }
}

impl BitAndAssign for ModelSet {
    fn bitand_assign(&mut self, o: ModelSet) {
        self.0 &= o.0;
    }
}

/// Set difference.
impl Sub for ModelSet {
    type Output = ModelSet;
    fn sub(self, o: ModelSet) -> ModelSet {
        ModelSet(self.0 & !o.0)
    }
}

impl SubAssign for ModelSet {
    fn sub_assign(&mut self, o: ModelSet) {
        self.0 &= !o.0;
    }
}

impl FromIterator<usize> for ModelSet {
    fn from_iter<I: IntoIterator<Item = usize>>(it: I) -> ModelSet {
        it.into_iter().fold(ModelSet::EMPTY, |s, i| s.with(i))
    }
}

impl IntoIterator for ModelSet {
    type Item = usize;
    type IntoIter = Iter;
    fn into_iter(self) -> Iter {
        self.iter()
    }
}

/// The models of a set, lowest first.
#[derive(Clone, Debug)]
pub struct Iter(u16);

impl Iterator for Iter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(i)
    }
}

impl fmt::Debug for ModelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The bits, as the monitor prints them (`{:#06b}`).
impl fmt::Binary for ModelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Binary::fmt(&self.0, f)
    }
}

/// `{0,2,5}`.
impl fmt::Display for ModelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{")?;
        for (k, i) in self.iter().enumerate() {
            write!(f, "{}{i}", if k > 0 { "," } else { "" })?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a: ModelSet = [0, 2, 5].into_iter().collect();
        assert_eq!(a.bits(), 0b100101);
        assert!(a.contains(2) && !a.contains(1) && !a.contains(40));
        assert_eq!(a.len(), 3);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 2, 5]);
        assert_eq!(a.without(2).with(1).bits(), 0b100011);
        assert_eq!((a - ModelSet::single(0)).first(), Some(2));
        assert_eq!(a.complement(6).bits(), 0b011010);
        assert!(a.exceeds(5) && !a.exceeds(6));
        assert_eq!(ModelSet::all(16).bits(), u16::MAX);
        assert_eq!(ModelSet::subsets(3).count(), 8);
        assert_eq!(ModelSet::subsets(16).count(), 1 << 16);
        assert_eq!(a.subsets_of().count(), 8);
        assert!(a.subsets_of().all(|q| q.is_subset(a)));
        assert_eq!(format!("{a}"), "{0,2,5}");
        assert_eq!(ModelSet::try_from_u64(1 << 16), None);
    }

    #[test]
    fn slots_drop_the_target_and_shift_down() {
        let a = ModelSet::from_bits(0b1011_0110);
        for j in 0..8 {
            let want: ModelSet =
                a.iter().filter(|&i| i != j).map(|i| if i < j { i } else { i - 1 }).collect();
            assert_eq!(a.slots_for(j), want, "target {j}");
        }
        assert_eq!(ModelSet::all(16).slots_for(15), ModelSet::all(15));
        assert_eq!(ModelSet::all(16).slots_for(0), ModelSet::all(15));
    }

    #[test]
    fn serialises_as_the_u16_it_holds() {
        let a = ModelSet::from_bits(0x8001);
        assert_eq!(postcard::to_stdvec(&a).unwrap(), postcard::to_stdvec(&0x8001u16).unwrap());
        // Older bundles stored sets as u64 varints; the same bytes decode.
        assert_eq!(postcard::from_bytes::<ModelSet>(&postcard::to_stdvec(&0x8001u64).unwrap()).unwrap(), a);
    }
}
