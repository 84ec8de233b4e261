//! The state as saved in a snapshot: maps with composite keys as lists.

use super::model::{Deployment, MigrationRec, RollbackRec, ThresholdRec};
use super::{Retention, State, Tomb};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Serialize, Deserialize)]
pub(crate) struct StateImage {
    seq: u64,
    clock: DateTime<Utc>,
    deployments: Vec<Deployment>,
    tombstones: Vec<(u64, DateTime<Utc>, Tomb)>,
    alerted: Vec<(String, DateTime<Utc>)>,
    rollbacks: Vec<RollbackImage>,
    last_rollback: Vec<(String, String, DateTime<Utc>)>,
    live: HashMap<String, HashMap<String, u64>>,
    last_ok_seq: Vec<(String, String, u64, DateTime<Utc>, String)>,
    thresholds: HashMap<String, ThresholdRec>,
    budget_fired: Vec<(String, String, f64)>,
    migrations: Vec<MigrationImage>,
    pending_failed_migrations: Vec<MigrationImage>,
}

/// A migration with the fields the gate's JSON leaves out.
#[derive(Serialize, Deserialize)]
struct MigrationImage {
    #[serde(flatten)]
    rec: MigrationRec,
    seq: u64,
    received: DateTime<Utc>,
}

impl From<&MigrationRec> for MigrationImage {
    fn from(m: &MigrationRec) -> Self {
        MigrationImage {
            rec: m.clone(),
            seq: m.seq,
            received: m.received,
        }
    }
}

impl From<MigrationImage> for MigrationRec {
    fn from(m: MigrationImage) -> Self {
        MigrationRec {
            seq: m.seq,
            received: m.received,
            ..m.rec
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RollbackImage {
    #[serde(flatten)]
    rec: RollbackRec,
    last_seen: DateTime<Utc>,
}

fn pairs<K1: Clone, K2: Clone, V: Clone>(m: &HashMap<(K1, K2), V>) -> Vec<(K1, K2, V)> {
    m.iter()
        .map(|((a, b), v)| (a.clone(), b.clone(), v.clone()))
        .collect()
}

fn unpairs<K1: Eq + std::hash::Hash, K2: Eq + std::hash::Hash, V>(
    v: Vec<(K1, K2, V)>,
) -> HashMap<(K1, K2), V> {
    v.into_iter().map(|(a, b, x)| ((a, b), x)).collect()
}

impl State {
    /// A copy of everything the state holds, for a snapshot.
    pub(crate) fn image(&self) -> StateImage {
        StateImage {
            seq: self.seq,
            clock: self.clock,
            deployments: self.deployments.values().cloned().collect(),
            tombstones: self
                .tombstones
                .iter()
                .map(|(k, (t, v))| (*k, *t, *v))
                .collect(),
            alerted: self.alerted.iter().map(|(k, t)| (k.clone(), *t)).collect(),
            rollbacks: self
                .rollbacks
                .values()
                .map(|r| RollbackImage {
                    rec: r.clone(),
                    last_seen: r.last_seen,
                })
                .collect(),
            last_rollback: pairs(&self.last_rollback),
            live: self.live.clone(),
            last_ok_seq: self
                .last_ok_seq
                .iter()
                .map(|((p, e), (s, t, d))| (p.clone(), e.clone(), *s, *t, d.clone()))
                .collect(),
            thresholds: self.thresholds.clone(),
            budget_fired: pairs(&self.budget_fired),
            migrations: self.migrations.iter().map(MigrationImage::from).collect(),
            pending_failed_migrations: self
                .pending_failed_migrations
                .iter()
                .map(MigrationImage::from)
                .collect(),
        }
    }

    /// The state a snapshot saved, under `retention` (the current rules').
    pub(crate) fn from_image(img: StateImage, retention: Retention) -> State {
        let mut st = State::new(retention);
        st.seq = img.seq;
        st.clock = img.clock;
        st.last_sweep = img.clock;
        for d in img.deployments {
            st.samples += d.sample_count();
            st.deployments.insert((d.project.clone(), d.id.clone()), d);
        }
        st.tombstones = img
            .tombstones
            .into_iter()
            .map(|(k, t, v)| (k, (t, v)))
            .collect();
        st.alerted = img.alerted.into_iter().collect();
        st.rollbacks = img
            .rollbacks
            .into_iter()
            .map(|r| {
                let key = (r.rec.project.clone(), r.rec.deployment_id.clone());
                (
                    key,
                    RollbackRec {
                        last_seen: r.last_seen,
                        ..r.rec
                    },
                )
            })
            .collect();
        st.last_rollback = unpairs(img.last_rollback);
        st.live = img.live;
        st.last_ok_seq = img
            .last_ok_seq
            .into_iter()
            .map(|(p, e, s, t, d)| ((p, e), (s, t, d)))
            .collect();
        st.thresholds = img.thresholds;
        st.budget_fired = unpairs(img.budget_fired);
        st.migrations = img.migrations.into_iter().map(MigrationRec::from).collect();
        st.pending_failed_migrations = img
            .pending_failed_migrations
            .into_iter()
            .map(MigrationRec::from)
            .collect();
        st
    }
}
