//! How a model's output is judged: the rule its users score it by, declared in the manifest
//! (`score = { rule = "presence", threshold = 0.5 }`), or by default its kind's own rule (a
//! regression output: every value within `tolerance`). [`crate::links::agreement`] applies it, so
//! accuracy, links, hold scores and the staleness model all use the declared rule; the loop also
//! keeps the kind's own rule beside it so reports can show both.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::manifest::OutputKind;

/// Values per box for `rule = "boxes"`: x1, y1, x2, y2 and a score.
pub const BOX_VALUES: usize = 5;
/// The most boxes a `boxes` output may hold (the matching keeps its matched flags in a `u64`).
pub const MAX_BOXES: usize = 64;

/// Whether `presence` is judged per value (each a tile or a class) or for the whole output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Each value above the threshold or not; the score is the share of values that agree.
    #[default]
    Tile,
    /// Anything present: the largest value above the threshold or not.
    Overall,
}

/// A declared scoring rule (the manifest's `score` table, tagged by `rule`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScoreRule {
    /// The kind's own rule (regression: every value within `tolerance`). The default. (Empty
    /// struct variants, here and for `Class`, so that a stray key is refused like elsewhere.)
    Tolerance {},
    /// Presence above `threshold`, per tile or overall.
    Presence {
        threshold: f32,
        #[serde(default)]
        per: Per,
    },
    /// The number of values above `threshold` is equal.
    Count { threshold: f32 },
    /// The largest value is at the same index (top-1 class).
    Class {},
    /// Groups of [`BOX_VALUES`] values (x1, y1, x2, y2, score); boxes scoring at least
    /// `threshold` are matched greedily by IoU ≥ `iou`; the score is the F1 of the matching
    /// (1 when neither side has a box).
    Boxes { threshold: f32, iou: f32 },
}

impl ScoreRule {
    /// The rule's name as the manifest writes it.
    pub fn name(self) -> &'static str {
        match self {
            ScoreRule::Tolerance {} => "tolerance",
            ScoreRule::Presence { per: Per::Tile, .. } => "presence per tile",
            ScoreRule::Presence { per: Per::Overall, .. } => "presence overall",
            ScoreRule::Count { .. } => "count",
            ScoreRule::Class {} => "class",
            ScoreRule::Boxes { .. } => "boxes",
        }
    }

    /// Check the rule against the output it judges; the error names the failing value.
    pub fn check(self, kind: OutputKind, size: u32) -> Result<()> {
        if matches!(self, ScoreRule::Tolerance {}) {
            return Ok(());
        }
        if kind.seq().is_some() {
            bail!(
                "score rule {:?} is for vector outputs; a sequence is judged by its decode rule",
                self.name()
            );
        }
        let unit = |what: &str, v: f32| -> Result<()> {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                bail!("score {what} {v} must be a finite number in 0..=1");
            }
            Ok(())
        };
        match self {
            ScoreRule::Presence { threshold, .. } | ScoreRule::Count { threshold } => {
                if !threshold.is_finite() {
                    bail!("score threshold {threshold} must be finite");
                }
            }
            ScoreRule::Class {} if size < 2 => bail!("score rule \"class\" needs size >= 2, not {size}"),
            ScoreRule::Boxes { threshold, iou } => {
                if !threshold.is_finite() {
                    bail!("score threshold {threshold} must be finite");
                }
                unit("iou", iou)?;
                if iou == 0.0 {
                    bail!("score iou must be > 0");
                }
                if size as usize % BOX_VALUES != 0 {
                    bail!(
                        "score rule \"boxes\" needs size a multiple of {BOX_VALUES} (x1, y1, x2, y2, score), not {size}"
                    );
                }
                if size as usize > MAX_BOXES * BOX_VALUES {
                    bail!(
                        "score rule \"boxes\" takes at most {MAX_BOXES} boxes ({} values), not {size} values",
                        MAX_BOXES * BOX_VALUES
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// How one model's outputs are judged: its kind's tolerance and its declared rule. `Copy`, so the
/// loop passes it by value each tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scoring {
    /// The kind's own rule's tolerance (regression and raw sequence outputs).
    pub tolerance: f32,
    pub rule: ScoreRule,
}

impl Scoring {
    /// The kind's own rule with `tolerance`.
    pub const fn tolerance(tolerance: f32) -> Scoring {
        Scoring { tolerance, rule: ScoreRule::Tolerance {} }
    }

    /// The same output judged by its kind's own rule (what reports show beside a declared rule).
    pub fn own(self) -> Scoring {
        Scoring::tolerance(self.tolerance)
    }

    /// Whether a rule other than the kind's own is declared.
    pub fn declared(self) -> bool {
        self.rule != ScoreRule::Tolerance {}
    }

    /// How close an output is to changing its verdict under the declared rule, in [0, 1]: for
    /// `presence` per tile and `count`, the mean over values of 1 / (1 + d), d the value's distance
    /// to the threshold relative to the threshold (1 on the threshold, → 0 far from it); for
    /// `presence` overall, the same of the largest value alone; for `class`, the
    /// same of the gap between the two largest values relative to the largest. 0 for the kind's own
    /// rule and for `boxes` (no single boundary). A signal of the staleness model
    /// (`crate::control::refresh`): a held output near its boundary flips sooner. Allocates nothing.
    pub fn fragility(self, v: &[f32]) -> f32 {
        let near = |d: f32| if d.is_finite() { 1.0 / (1.0 + d.abs()) } else { 0.0 };
        match self.rule {
            ScoreRule::Presence { threshold, per: Per::Overall } if !v.is_empty() => {
                // The verdict is the largest value's: its distance alone.
                let top = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                near((top - threshold) / threshold.abs().max(1e-3))
            }
            ScoreRule::Presence { threshold, .. } | ScoreRule::Count { threshold } if !v.is_empty() => {
                let s = threshold.abs().max(1e-3);
                v.iter().map(|x| near((x - threshold) / s)).sum::<f32>() / v.len() as f32
            }
            ScoreRule::Class {} if v.len() >= 2 => {
                let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                for &x in v {
                    if x > a {
                        (a, b) = (x, a);
                    } else if x > b {
                        b = x;
                    }
                }
                near((a - b) / a.abs().max(1e-3))
            }
            _ => 0.0,
        }
    }
}

/// Agreement of `predicted` with `actual` under a declared rule (not [`ScoreRule::Tolerance {}`],
/// which [`crate::links::agreement`] applies by kind). Both slices have the same, non-zero length
/// and no NaN in `predicted` (the caller checks). Allocates nothing.
pub(crate) fn judge(rule: ScoreRule, predicted: &[f32], actual: &[f32]) -> f32 {
    let hit = |b: bool| if b { 1.0 } else { 0.0 };
    match rule {
        ScoreRule::Tolerance {} => unreachable!("the kind's own rule is applied by links::agreement"),
        ScoreRule::Presence { threshold, per: Per::Tile } => {
            let same = predicted
                .iter()
                .zip(actual)
                .filter(|(p, a)| (**p >= threshold) == (**a >= threshold))
                .count();
            same as f32 / predicted.len() as f32
        }
        ScoreRule::Presence { threshold, per: Per::Overall } => {
            let any = |v: &[f32]| v.iter().any(|x| *x >= threshold);
            hit(any(predicted) == any(actual))
        }
        ScoreRule::Count { threshold } => {
            let count = |v: &[f32]| v.iter().filter(|x| **x >= threshold).count();
            hit(count(predicted) == count(actual))
        }
        ScoreRule::Class {} => hit(crate::links::argmax(predicted) == crate::links::argmax(actual)),
        ScoreRule::Boxes { threshold, iou } => boxes_f1(threshold, iou, predicted, actual),
    }
}

/// F1 of a greedy IoU matching between the boxes of `p` and `a` that score at least `threshold`:
/// each box of `a`, in order, takes the unmatched box of `p` with the largest IoU, if it reaches
/// `min_iou`. An output holds at most [`MAX_BOXES`] boxes ([`ScoreRule::check`]; a `u64` of matched
/// flags).
fn boxes_f1(threshold: f32, min_iou: f32, p: &[f32], a: &[f32]) -> f32 {
    let live = |v: &[f32]| v.chunks_exact(BOX_VALUES).filter(|b| b[4] >= threshold).count();
    let (np, na) = (live(p), live(a));
    if np + na == 0 {
        return 1.0;
    }
    let mut taken = 0u64;
    let mut matched = 0usize;
    for b in a.chunks_exact(BOX_VALUES).filter(|b| b[4] >= threshold) {
        let mut best: Option<(usize, f32)> = None;
        for (i, q) in p.chunks_exact(BOX_VALUES).enumerate().take(MAX_BOXES) {
            if q[4] < threshold || taken & (1 << i) != 0 {
                continue;
            }
            let v = crate::links::iou(&corners_to_xywh(q), &corners_to_xywh(b));
            if v >= min_iou && best.is_none_or(|(_, bv)| v > bv) {
                best = Some((i, v));
            }
        }
        if let Some((i, _)) = best {
            taken |= 1 << i;
            matched += 1;
        }
    }
    2.0 * matched as f32 / (np + na) as f32
}

/// A box given as corners (x1, y1, x2, y2) in the `[x, y, w, h]` form of [`crate::links::iou`].
fn corners_to_xywh(b: &[f32]) -> [f32; 4] {
    [b[0], b[1], b[2] - b[0], b[3] - b[1]]
}

/// The bundle's encoding of a model's [`Scoring`]: the kind's own rule is the tolerance alone (an
/// `f32`, byte for byte what format versions up to 6 wrote); a declared rule writes the negated
/// rule code in that place (tolerances are > 0, so the sign tells them apart), then the tolerance
/// and the rule's two parameters. Bundles with a declared rule are written as format version 7.
pub(crate) mod bundle_code {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    use super::{Per, ScoreRule, Scoring};

    fn code(r: ScoreRule) -> (f32, f32, f32) {
        match r {
            ScoreRule::Tolerance {} => (0.0, 0.0, 0.0),
            ScoreRule::Presence { threshold, per: Per::Tile } => (1.0, threshold, 0.0),
            ScoreRule::Presence { threshold, per: Per::Overall } => (2.0, threshold, 0.0),
            ScoreRule::Count { threshold } => (3.0, threshold, 0.0),
            ScoreRule::Class {} => (4.0, 0.0, 0.0),
            ScoreRule::Boxes { threshold, iou } => (5.0, threshold, iou),
        }
    }

    fn rule(c: f32, a: f32, b: f32) -> Option<ScoreRule> {
        Some(match c as u32 {
            1 => ScoreRule::Presence { threshold: a, per: Per::Tile },
            2 => ScoreRule::Presence { threshold: a, per: Per::Overall },
            3 => ScoreRule::Count { threshold: a },
            4 => ScoreRule::Class {},
            5 => ScoreRule::Boxes { threshold: a, iou: b },
            _ => return None,
        })
    }

    pub fn serialize<S: Serializer>(s: &Scoring, ser: S) -> Result<S::Ok, S::Error> {
        if !s.declared() {
            let mut t = ser.serialize_tuple(1)?;
            t.serialize_element(&s.tolerance)?;
            return t.end();
        }
        let (c, a, b) = code(s.rule);
        let mut t = ser.serialize_tuple(4)?;
        t.serialize_element(&-c)?;
        t.serialize_element(&s.tolerance)?;
        t.serialize_element(&a)?;
        t.serialize_element(&b)?;
        t.end()
    }

    struct ScoringVisitor;
    impl<'de> Visitor<'de> for ScoringVisitor {
        type Value = Scoring;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a tolerance, or a negated score rule code with its tolerance and parameters")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Scoring, A::Error> {
            let mut next = |what: &str| -> Result<f32, A::Error> {
                s.next_element::<f32>()?.ok_or_else(|| A::Error::custom(format!("missing {what}")))
            };
            let first = next("tolerance")?;
            if !(first < 0.0) {
                return Ok(Scoring::tolerance(first));
            }
            let tolerance = next("tolerance")?;
            let (a, b) = (next("score threshold")?, next("score parameter")?);
            let rule = rule(-first, a, b)
                .filter(|_| first.fract() == 0.0)
                .ok_or_else(|| A::Error::custom(format!("unknown score rule code {}", -first)))?;
            // A parameter the rule does not use must be written as 0 (what `code` writes): any
            // other value is a damaged or hand-made bundle, refused rather than ignored.
            let (_, ua, ub) = code(rule);
            if a.to_bits() != ua.to_bits() || b.to_bits() != ub.to_bits() {
                let (i, v) = if a.to_bits() != ua.to_bits() { (1, a) } else { (2, b) };
                return Err(A::Error::custom(format!(
                    "score rule code {}: parameter {i} is {v}, but the rule does not use it (0)",
                    -first
                )));
            }
            Ok(Scoring { tolerance, rule })
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Scoring, D::Error> {
        d.deserialize_tuple(4, ScoringVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_counts_and_classes() {
        let tile = ScoreRule::Presence { threshold: 0.5, per: Per::Tile };
        assert_eq!(judge(tile, &[0.6, 0.1, 0.9, 0.2], &[0.7, 0.6, 0.4, 0.0]), 0.5);
        let overall = ScoreRule::Presence { threshold: 0.5, per: Per::Overall };
        assert_eq!(judge(overall, &[0.6, 0.1], &[0.1, 0.9]), 1.0);
        assert_eq!(judge(overall, &[0.4, 0.1], &[0.1, 0.9]), 0.0);
        let count = ScoreRule::Count { threshold: 0.5 };
        assert_eq!(judge(count, &[0.6, 0.1, 0.7], &[0.1, 0.9, 0.8]), 1.0);
        assert_eq!(judge(count, &[0.6, 0.1, 0.1], &[0.1, 0.9, 0.8]), 0.0);
        assert_eq!(judge(ScoreRule::Class {}, &[0.1, 0.3, 0.2], &[0.0, 5.0, 1.0]), 1.0);
        assert_eq!(judge(ScoreRule::Class {}, &[0.4, 0.3, 0.2], &[0.0, 5.0, 1.0]), 0.0);
    }

    #[test]
    fn fragility_is_nearness_to_the_boundary() {
        let s = |rule| Scoring { tolerance: 0.1, rule };
        let p = s(ScoreRule::Presence { threshold: 0.5, per: Per::Tile });
        assert_eq!(p.fragility(&[0.5, 0.5]), 1.0);
        assert!(p.fragility(&[0.45]) > p.fragility(&[0.2]));
        assert!(p.fragility(&[0.2]) > p.fragility(&[0.0]));
        let overall = s(ScoreRule::Presence { threshold: 0.5, per: Per::Overall });
        assert_eq!(overall.fragility(&[0.0, 0.5]), 1.0, "the largest value decides");
        assert!(
            s(ScoreRule::Class {}).fragility(&[0.5, 0.49, 0.0])
                > s(ScoreRule::Class {}).fragility(&[0.9, 0.1, 0.0])
        );
        assert_eq!(Scoring::tolerance(0.1).fragility(&[0.5]), 0.0);
        assert_eq!(p.fragility(&[f32::NAN]), 0.0);
    }

    #[test]
    fn boxes_match_by_iou() {
        let r = ScoreRule::Boxes { threshold: 0.5, iou: 0.5 };
        let a = [0.0, 0.0, 1.0, 1.0, 0.9, 2.0, 2.0, 3.0, 3.0, 0.8];
        // Same boxes in another order: all matched.
        let p = [2.0, 2.0, 3.0, 3.1, 0.7, 0.0, 0.0, 1.0, 0.9, 0.6];
        assert_eq!(judge(r, &p, &a), 1.0);
        // One box moved off (IoU 0), one below the threshold: 0 matched of 1 + 2.
        let p = [0.5, 0.5, 1.5, 1.5, 0.9, 2.0, 2.0, 3.0, 3.0, 0.1];
        assert_eq!(judge(r, &p, &a), 0.0);
        // Nothing on either side: agreement.
        assert_eq!(judge(r, &[0.0, 0.0, 1.0, 1.0, 0.1], &[0.0, 0.0, 1.0, 1.0, 0.2]), 1.0);
        // One of two found: F1 = 2·1 / (1 + 2).
        let p = [0.0, 0.0, 1.0, 1.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert!((judge(r, &p, &a) - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn checks_name_the_value() {
        let e = |r: ScoreRule, k, s| r.check(k, s).unwrap_err().to_string();
        assert!(
            e(ScoreRule::Boxes { threshold: 0.5, iou: 0.5 }, OutputKind::Regression, 7)
                .contains("multiple of 5")
        );
        assert!(
            e(ScoreRule::Boxes { threshold: 0.5, iou: 1.5 }, OutputKind::Regression, 5).contains("iou 1.5")
        );
        assert!(e(ScoreRule::Count { threshold: f32::NAN }, OutputKind::Regression, 5).contains("NaN"));
        assert!(e(ScoreRule::Class {}, OutputKind::Regression, 1).contains("size >= 2"));
        assert!(
            e(ScoreRule::Boxes { threshold: 0.5, iou: 0.5 }, OutputKind::Regression, 325)
                .contains("at most 64 boxes")
        );
        assert!(
            ScoreRule::Presence { threshold: 0.5, per: Per::Tile }.check(OutputKind::Regression, 4).is_ok()
        );
    }

    #[test]
    fn bundle_code_round_trips_and_keeps_old_bytes() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct W(#[serde(with = "bundle_code")] Scoring);
        let own = W(Scoring::tolerance(0.02));
        let bytes = postcard::to_allocvec(&own).unwrap();
        assert_eq!(
            bytes,
            postcard::to_allocvec(&0.02f32).unwrap(),
            "the kind's own rule writes the bare tolerance"
        );
        assert_eq!(postcard::from_bytes::<W>(&bytes).unwrap(), own);
        for rule in [
            ScoreRule::Presence { threshold: 0.5, per: Per::Tile },
            ScoreRule::Presence { threshold: 0.25, per: Per::Overall },
            ScoreRule::Count { threshold: 0.3 },
            ScoreRule::Class {},
            ScoreRule::Boxes { threshold: 0.4, iou: 0.5 },
        ] {
            let w = W(Scoring { tolerance: 0.1, rule });
            let bytes = postcard::to_allocvec(&w).unwrap();
            assert_eq!(postcard::from_bytes::<W>(&bytes).unwrap(), w, "{rule:?}");
        }
        for code in [-9.0f32, -1.5, -0.5, f32::NEG_INFINITY, -1e30] {
            let bad = postcard::to_allocvec(&(code, 0.1f32, 0.0f32, 0.0f32)).unwrap();
            assert!(postcard::from_bytes::<W>(&bad).is_err(), "rule code {code} is refused");
        }
        // A parameter the rule does not use must be 0: class uses none, presence and count one.
        for (code, a, b) in
            [(-4.0f32, 0.5f32, 0.0f32), (-4.0, 0.0, 1.0), (-1.0, 0.5, 0.25), (-3.0, 0.3, -0.0)]
        {
            let bad = postcard::to_allocvec(&(code, 0.1f32, a, b)).unwrap();
            assert!(postcard::from_bytes::<W>(&bad).is_err(), "rule code {code} with parameters {a}, {b}");
        }
        // -0.0 is not a rule code: it reads as a tolerance (which the bundle's check refuses, > 0).
        let zero = postcard::to_allocvec(&-0.0f32).unwrap();
        assert_eq!(postcard::from_bytes::<W>(&zero).unwrap().0.rule, ScoreRule::Tolerance {});
    }
}
