//! Simulated fleet boards (features `fleet` and `sim`): a board that fine-tunes its links on its own
//! rows of a reference recording, offers them through a [`FleetTap`] to a real [`FleetClient`], and
//! scores links on held-out rows. The integration test and `jetlink bench fleet` use it.

use crate::model_set::ModelSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::client::{ClientOptions, FleetClient};
use super::tap::FleetTap;
use super::{FleetConfig, fuse, model_hash};
use crate::bundle::Bundle;
use crate::links::{AdaptOptions, Adapter, LinkModel, Predictor, Rng};
use crate::recording::Recording;

/// The rows `idx` of `rec`, concatenated.
pub fn rows_of(rec: &Recording, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&r| rec.row(r).iter().copied()).collect()
}

/// Fine-tune every link and ensemble of `p` on rows `fit` of `rec` (every model's output valid):
/// `epochs` passes in shuffled batches of 32, each target in turn from all other models.
pub fn local_train(
    bundle: &Bundle,
    p: &mut Predictor,
    rec: &Recording,
    fit: &[usize],
    epochs: usize,
    seed: u64,
) {
    if fit.is_empty() {
        return;
    }
    let batch = 32usize;
    let mut adapter = Adapter::new(bundle, p, AdaptOptions { max_batch: batch, ..AdaptOptions::default() });
    let all = ModelSet::all(p.n_models());
    let mut order = fit.to_vec();
    let mut rng = Rng::new(seed);
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(batch) {
            let rows = rows_of(rec, chunk);
            for j in 0..p.n_models() {
                let _ = adapter.step(p, j, all, &rows);
            }
        }
    }
}

/// Mean over targets of the agreement of each target predicted from all other models, on rows
/// `idx` of `rec`.
pub fn score(bundle: &Bundle, p: &mut Predictor, rec: &Recording, idx: &[usize]) -> f32 {
    let (kinds, tol) = (bundle.kinds(), bundle.scorings());
    let rows = rows_of(rec, idx);
    let all = ModelSet::all(p.n_models());
    let valid = vec![all; idx.len()];
    let mut out = vec![0.0; p.stride()];
    let n = p.n_models();
    (0..n)
        .map(|j| fuse::target_agreement(p, &kinds, &tol, j, &rows, &valid, &mut out).unwrap_or(0.0))
        .sum::<f32>()
        / n as f32
}

/// One simulated board: its local predictor, its tap and its fleet client.
pub struct SimBoard {
    pub name: String,
    pub predictor: Predictor,
    pub tap: Arc<FleetTap>,
    pub client: FleetClient,
}

impl SimBoard {
    /// Join the fleet at `cfg` with a predictor from `bundle` (not yet trained).
    pub fn join(
        cfg: &FleetConfig,
        bundle: &Bundle,
        name: &str,
        fleet_key: [u8; 32],
        ring_rows: usize,
    ) -> Result<SimBoard> {
        SimBoard::join_with_state(cfg, bundle, name, fleet_key, ring_rows, None)
    }

    /// [`SimBoard::join`], keeping the highest global version accepted in `state` (as a board does
    /// across restarts).
    pub fn join_with_state(
        cfg: &FleetConfig,
        bundle: &Bundle,
        name: &str,
        fleet_key: [u8; 32],
        ring_rows: usize,
        state: Option<crate::signing::RollbackState>,
    ) -> Result<SimBoard> {
        let predictor = Predictor::new(bundle);
        let tap = Arc::new(FleetTap::new(&predictor, ring_rows));
        let opts = ClientOptions {
            board: name.into(),
            fleet_key,
            model_hash: model_hash(bundle),
            kinds: bundle.kinds(),
            scorings: bundle.scorings(),
            poll: Duration::from_millis(20),
            tasks: super::tasks::TaskCosts::of_bundle(bundle),
            state,
        };
        let client = FleetClient::start(cfg.clone(), opts, tap.clone(), predictor.clone())?;
        Ok(SimBoard { name: name.into(), predictor, tap, client })
    }

    /// Offer the board's links, trained on `samples` rows per target, with `val` (rows of `rec`) as
    /// the labelled rows fusion is judged on.
    pub fn offer(&self, rec: &Recording, samples: &[u32], val: &[usize]) {
        let rows = rows_of(rec, val);
        let all = ModelSet::all(self.predictor.n_models());
        let valid = vec![all; val.len()];
        self.tap.offer_local(&self.predictor, samples, &rows, &valid, val.len());
    }

    /// Apply fused global links the client has ready; returns their version.
    pub fn take_global(&mut self) -> Option<u64> {
        self.tap.take_global(&mut self.predictor)
    }
}
