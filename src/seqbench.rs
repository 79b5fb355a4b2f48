//! `jetlink bench seq`: links to and from sequence outputs, measured on a workload's reference
//! recording. For every pair with a sequence on either side: the link's score by the target's rule
//! on held-out evaluation frames, the constant predictor's, and the "reduce the sequence to a fixed
//! vector first" link on the same pair (max over time per column, today's approach); for every
//! sequence target: its decoded-output agreement and character-level similarity when predicted from
//! the best allowed set of running models, beside an in-sample ceiling; and the predictor's time per
//! frame for sequence and vector targets.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::bundle::Bundle;
use crate::links::{BuildOptions, Predictor, agreement, sequence_similarity};
use crate::manifest::{Manifest, OutputKind};
use crate::model_set::ModelSet;
use crate::recording::{RecordedModel, Recording};

/// One measured pair.
#[derive(Clone, Debug, Serialize)]
pub struct PairRow {
    pub source: String,
    pub target: String,
    /// `seq->vec`, `vec->seq` or `seq->seq`.
    pub pair: String,
    /// Mean agreement on the evaluation frames by the target's rule (the link alone: the ensemble
    /// with this one source running).
    pub link: f32,
    /// The training mean, activated, scored the same way.
    pub constant: f32,
    /// The same pair with a sequence source reduced to its per-column maximum over time first
    /// (`None` where the source is a vector).
    pub reduce_first: Option<f32>,
    /// `link − reduce_first`, in points.
    pub gain_points: Option<f32>,
    /// Sequence targets: mean [`sequence_similarity`] (1 − normalised edit distance for `ctc`).
    pub similarity: Option<f32>,
    /// `ctc` targets: the same link trained on the target's own alignment (per-step classes)
    /// instead of its canonical alignment, scored by the same rule.
    pub raw_alignment: Option<f32>,
}

/// A sequence target predicted while it does not run.
#[derive(Clone, Debug, Serialize)]
pub struct SeqTargetRow {
    pub target: String,
    /// The running models (the best set of at most `max_active` without the target, chosen on the
    /// training holdout).
    pub active: Vec<String>,
    pub agreement: f32,
    pub similarity: f32,
    /// The same, with links fitted on the evaluation frames themselves (what the models' own
    /// disagreement allows at best with these links).
    pub ceiling_agreement: f32,
    pub ceiling_similarity: f32,
}

/// Predictor time per frame, microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct TimingRow {
    pub target: String,
    pub kind: String,
    /// Mean time of one `Predictor::predict` with every other model running (only this target is
    /// predicted: its links from all the others and its ensemble).
    pub mean_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeqBench {
    pub workload: String,
    pub train_frames: usize,
    pub eval_frames: std::ops::Range<usize>,
    pub max_active: usize,
    pub pairs: Vec<PairRow>,
    pub targets: Vec<SeqTargetRow>,
    pub timing: Vec<TimingRow>,
    pub wall_s: f64,
}

/// Mean score of `target` over `rows` with `active` running, by [`agreement`] and by
/// [`sequence_similarity`].
fn score(
    p: &mut Predictor,
    m: &Manifest,
    rec: &Recording,
    rows: std::ops::Range<usize>,
    active: u64,
    j: usize,
) -> Result<(f32, f32)> {
    let active = ModelSet::try_from_u64(active).context("more models than a model set holds")?;
    let mut out = vec![0.0; rec.stride()];
    let (kind, tol) = (m.models[j].kind, m.models[j].scoring());
    let range = rec.layout().range(j);
    let (mut a, mut s) = (0.0f64, 0.0f64);
    for r in rows.clone() {
        p.predict(active, rec.row(r), &mut out)?;
        a += agreement(kind, tol, &out[range.clone()], &rec.row(r)[range.clone()]) as f64;
        s += sequence_similarity(kind, tol, &out[range.clone()], &rec.row(r)[range.clone()]) as f64;
    }
    let n = rows.len().max(1) as f64;
    Ok(((a / n) as f32, (s / n) as f32))
}

/// The constant predictor's mean score for target `j`: the mean of its training rows, activated.
fn constant(
    m: &Manifest,
    rec: &Recording,
    train: std::ops::Range<usize>,
    eval: std::ops::Range<usize>,
    j: usize,
) -> f32 {
    let range = rec.layout().range(j);
    let (kind, tol) = (m.models[j].kind, m.models[j].scoring());
    let mut c = vec![0.0f64; range.len()];
    for r in train.clone() {
        for (k, &v) in rec.row(r)[range.clone()].iter().enumerate() {
            c[k] += v as f64;
        }
    }
    let c: Vec<f32> = c.iter().map(|&v| (v / train.len().max(1) as f64) as f32).collect();
    let n = eval.len().max(1) as f64;
    (eval.map(|r| agreement(kind, tol, &c, &rec.row(r)[range.clone()]) as f64).sum::<f64>() / n) as f32
}

/// The workload with sequence model `s` replaced by its reduction (max over time of each column,
/// a `regression` output of C values): the "reduce first" source of today's links.
fn reduce_first(m: &Manifest, rec: &Recording, s: usize) -> Result<(Manifest, Recording)> {
    let q = m.models[s].kind.seq().context("not a sequence")?;
    let c = (m.models[s].size / q.steps) as usize;
    let mut m2 = m.clone();
    let spec = &mut m2.models[s];
    spec.kind = OutputKind::Regression;
    spec.size = c as u32;
    spec.steps = None;
    spec.decode = None;
    spec.alphabet = None;
    let models: Vec<RecordedModel> = m2
        .models
        .iter()
        .map(|x| RecordedModel { name: x.name.clone(), kind: x.kind, size: x.size as usize })
        .collect();
    let mut out = Recording::new(models);
    let mut row = Vec::with_capacity(out.stride());
    for r in 0..rec.len() {
        row.clear();
        for j in 0..m.models.len() {
            let v = &rec.row(r)[rec.layout().range(j)];
            if j == s {
                let mut mx = vec![f32::NEG_INFINITY; c];
                for step in v.chunks_exact(c) {
                    for (a, &b) in mx.iter_mut().zip(step) {
                        *a = a.max(b);
                    }
                }
                row.extend_from_slice(&mx);
            } else {
                row.extend_from_slice(v);
            }
        }
        out.push(rec.frames[r], &row);
    }
    Ok((m2, out))
}

/// Every active set of at most `k` models without `j`, as masks.
fn subsets_without(n: usize, j: usize, k: usize) -> Vec<u64> {
    (1u64..1 << n).filter(|&mask| mask >> j & 1 == 0 && (mask.count_ones() as usize) <= k).collect()
}

/// Run the benchmark. Links are trained on rows `[0, train_end)` and evaluated on
/// `[train_end, eval_end)` (the clean evaluation frames); `max_active` bounds the running models
/// when a sequence target is predicted.
pub fn bench(
    m: &Manifest,
    rec: &Recording,
    train_end: usize,
    eval_end: usize,
    max_active: usize,
    opts: &BuildOptions,
) -> Result<SeqBench> {
    let t0 = Instant::now();
    let n = m.models.len();
    ensure!(
        train_end < eval_end && eval_end <= rec.len(),
        "frames: train {train_end}, eval end {eval_end}, recording {}",
        rec.len()
    );
    ensure!(
        (0..rec.len()).all(|r| rec.frames[r] as usize == r),
        "bench seq needs a recording of every stream frame in order"
    );
    let seqs: Vec<usize> = (0..n).filter(|&j| m.models[j].kind.seq().is_some()).collect();
    ensure!(!seqs.is_empty(), "workload {:?} has no sequence model", m.name);
    let (train, eval) = (0..train_end, train_end..eval_end);
    let b: Bundle = crate::train::build(m, rec, train_end, opts)?;
    let mut p = Predictor::new(&b);

    // The ctc targets trained on their own alignment: the same workload with their decoding rule
    // set to per-step classes for training (scored by the ctc rule below).
    let mut m_raw = m.clone();
    for spec in &mut m_raw.models {
        if let OutputKind::Sequence(q) = &mut spec.kind {
            if q.decode == crate::manifest::SeqDecode::Ctc {
                q.decode = crate::manifest::SeqDecode::Argmax;
                spec.decode = Some(q.decode);
                spec.alphabet = None;
            }
        }
    }
    let rec_raw = {
        let mut x = Recording::new(
            m_raw
                .models
                .iter()
                .map(|s| RecordedModel { name: s.name.clone(), kind: s.kind, size: s.size as usize })
                .collect(),
        );
        for r in 0..rec.len() {
            x.push(rec.frames[r], rec.row(r));
        }
        x
    };
    let mut p_raw = Predictor::new(&crate::train::build(&m_raw, &rec_raw, train_end, opts)?);

    // Reduce-first variants, one per sequence source.
    let mut reduced = Vec::new();
    for &s in &seqs {
        let (m2, r2) = reduce_first(m, rec, s)?;
        let b2 = crate::train::build(&m2, &r2, train_end, opts)?;
        reduced.push((s, m2, r2, Predictor::new(&b2)));
    }

    let mut pairs = Vec::new();
    for i in 0..n {
        for j in 0..n {
            let (si, sj) = (m.models[i].kind.seq().is_some(), m.models[j].kind.seq().is_some());
            if i == j || !(si || sj) {
                continue;
            }
            let (link, sim) = score(&mut p, m, rec, eval.clone(), 1 << i, j)?;
            let reduce = match reduced.iter_mut().find(|x| x.0 == i) {
                Some((_, m2, r2, p2)) => Some(score(p2, m2, r2, eval.clone(), 1 << i, j)?.0),
                None => None,
            };
            let is_ctc = m.models[j].kind.seq().is_some_and(|q| q.decode == crate::manifest::SeqDecode::Ctc);
            let raw_alignment =
                if is_ctc { Some(score(&mut p_raw, m, rec, eval.clone(), 1 << i, j)?.0) } else { None };
            pairs.push(PairRow {
                source: m.models[i].name.clone(),
                target: m.models[j].name.clone(),
                pair: format!("{}->{}", if si { "seq" } else { "vec" }, if sj { "seq" } else { "vec" }),
                link,
                constant: constant(m, rec, train.clone(), eval.clone(), j),
                reduce_first: reduce,
                gain_points: reduce.map(|r| 100.0 * (link - r)),
                similarity: sj.then_some(sim),
                raw_alignment,
            });
        }
    }

    // Sequence targets predicted from the best allowed set (chosen on the bundle's holdout rows,
    // the end of the training part), then the in-sample ceiling.
    let hold = b.split.fit_rows as usize..train_end;
    let ceiling_opts = {
        let mut o = opts.clone();
        o.train.holdout_fraction = 0.05;
        o
    };
    let sub = |r: std::ops::Range<usize>| -> Result<Recording> {
        let mut x = Recording::new(rec.models.clone());
        // Renumbered from 0: the trainer takes the rows before a frame number.
        for (f, k) in r.enumerate() {
            x.push(f as u32, rec.row(k));
        }
        Ok(x)
    };
    let eval_rec = sub(eval.clone())?;
    let bc = crate::train::build(m, &eval_rec, eval_rec.len(), &ceiling_opts)?;
    let mut pc = Predictor::new(&bc);
    let mut targets = Vec::new();
    for &j in &seqs {
        let mut best = (f32::NEG_INFINITY, 0u64);
        for mask in subsets_without(n, j, max_active) {
            let (a, s) = score(&mut p, m, rec, hold.clone(), mask, j)?;
            let key = a + 1e-3 * s;
            if key > best.0 {
                best = (key, mask);
            }
        }
        let mask = best.1;
        let (a, s) = score(&mut p, m, rec, eval.clone(), mask, j)?;
        let (ca, cs) = score(&mut pc, m, &eval_rec, 0..eval_rec.len(), mask, j)?;
        targets.push(SeqTargetRow {
            target: m.models[j].name.clone(),
            active: (0..n).filter(|&i| mask >> i & 1 == 1).map(|i| m.models[i].name.clone()).collect(),
            agreement: a,
            similarity: s,
            ceiling_agreement: ca,
            ceiling_similarity: cs,
        });
    }

    // Predictor time per frame, per target (every other model running).
    let full = (1u64 << n) - 1;
    let mut out = vec![0.0; rec.stride()];
    let mut timing = Vec::new();
    for j in 0..n {
        let mask = ModelSet::try_from_u64(full & !(1 << j)).context("more models than a model set holds")?;
        let rows = eval.clone().cycle().take(2000);
        p.predict(mask, rec.row(train_end), &mut out)?;
        let t = Instant::now();
        let mut calls = 0usize;
        for r in rows {
            p.predict(mask, rec.row(r), &mut out)?;
            calls += 1;
        }
        timing.push(TimingRow {
            target: m.models[j].name.clone(),
            kind: m.models[j].kind.name().to_string(),
            mean_us: t.elapsed().as_secs_f64() * 1e6 / calls as f64,
        });
    }
    Ok(SeqBench {
        workload: m.name.clone(),
        train_frames: train_end,
        eval_frames: eval,
        max_active,
        pairs,
        targets,
        timing,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

impl SeqBench {
    /// A plain-text table of the results.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "workload {:?}: links trained on frames 0..{}, scored on {}..{}\n\n{:<10} {:<10} {:<9} {:>6} {:>8} {:>8} {:>7} {:>6} {:>7}\n",
            self.workload,
            self.train_frames,
            self.eval_frames.start,
            self.eval_frames.end,
            "source",
            "target",
            "pair",
            "link",
            "constant",
            "reduce1st",
            "gain",
            "sim",
            "rawalign"
        );
        let f =
            |v: Option<f32>, scale: f32| v.map(|x| format!("{:.3}", x * scale)).unwrap_or_else(|| "-".into());
        for r in &self.pairs {
            s += &format!(
                "{:<10} {:<10} {:<9} {:>6.3} {:>8.3} {:>8} {:>7} {:>6} {:>7}\n",
                r.source,
                r.target,
                r.pair,
                r.link,
                r.constant,
                f(r.reduce_first, 1.0),
                r.gain_points.map(|g| format!("{g:+.1}")).unwrap_or_else(|| "-".into()),
                f(r.similarity, 1.0),
                f(r.raw_alignment, 1.0)
            );
        }
        s += &format!("\nsequence targets predicted with at most {} models running:\n", self.max_active);
        for t in &self.targets {
            s += &format!(
                "  {} from [{}]: agreement {:.3}, similarity {:.3}; in-sample ceiling {:.3} / {:.3}\n",
                t.target,
                t.active.join(", "),
                t.agreement,
                t.similarity,
                t.ceiling_agreement,
                t.ceiling_similarity
            );
        }
        s += "\npredictor time per frame (only this target predicted, every other model running):\n";
        for t in &self.timing {
            s += &format!("  {:<10} {:<10} {:>8.2} us\n", t.target, t.kind, t.mean_us);
        }
        s
    }
}
