//! Cooperative adaptation across boards. Each board offers its pending adaptation tasks (refresh
//! the links into target j, with an importance and a cost) and its spare capacity; a refreshed
//! target helps every board through the averaged links, so the aggregator refreshes each target on
//! as few boards as it needs: tasks by importance (summed over the boards that ask), most important
//! first, each to the board with the most spare capacity that offered it and can still fit it,
//! then to any board that fits (more important tasks go to more capable boards). A greedy multiple
//! knapsack; each board's DCTA table still decides its own local tasks. With groups the aggregator
//! allocates within each group (and among the boards of no group): only the boards that receive
//! the same average profit from one refresh.

use crate::model_set::ModelSet;
use std::collections::BTreeMap;

use super::msg::{FLEET_PROTO, ModelHash, TaskAssignment, TaskItem, TaskOffer};
use crate::bundle::Bundle;

/// What a board needs to price its tasks: per target, its importance weight and the cost of
/// refreshing it on the board's first (fastest listed) unit with the largest K, in thousandths of that unit's capacity
/// per period at full power; from the bundle's DCTA table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskCosts {
    pub weights: Vec<f32>,
    pub cost_milli: Vec<u16>,
}

impl TaskCosts {
    /// From the bundle's DCTA table (`None` without one).
    pub fn of_bundle(b: &Bundle) -> Option<TaskCosts> {
        let t = crate::dcta::PolicyTable::from_postcard(b.dcta.as_ref()?).ok()?.menu;
        let (n, k) = (t.n_tasks(), t.n_choices());
        let cap = *t.capacity(0).first()?;
        if t.n_units() == 0 || cap == 0 {
            return None;
        }
        // A refresh on the largest K, on the first unit.
        let cost_milli = (0..n)
            .map(|j| {
                let us = t.work_us[j * k + k - 1] / t.speeds[0] as f64;
                (us * 1000.0 / cap as f64).round().min(65535.0) as u16
            })
            .collect();
        Some(TaskCosts { weights: t.weights.clone(), cost_milli })
    }

    /// The offer of a board whose drift levels are `drift` and which allocated `local` (bit j)
    /// itself: the drifting targets it did not take, and the capacity it has left.
    pub fn offer(
        &self,
        board: &str,
        model_hash: ModelHash,
        period: u32,
        drift: &[f32],
        local: ModelSet,
    ) -> TaskOffer {
        let mut used = 0u32;
        let mut tasks = Vec::new();
        for (j, &d) in drift.iter().enumerate().take(self.cost_milli.len()) {
            if local.contains(j) {
                used += u32::from(self.cost_milli[j]);
            } else if d > 0.0 {
                let v = crate::dcta::importance(self.weights.get(j).copied().unwrap_or(1.0), d);
                tasks.push(TaskItem {
                    target: j as u8,
                    importance_milli: (v * 1000.0).round().clamp(1.0, 65535.0) as u16,
                    cost_milli: self.cost_milli[j],
                });
            }
        }
        TaskOffer {
            proto: FLEET_PROTO,
            board: board.into(),
            model_hash,
            period,
            capacity_milli: 1000u32.saturating_sub(used),
            tasks,
        }
    }
}

/// Allocate the offered tasks across boards; see the module docs. Deterministic: ties go to the
/// board whose name sorts first.
pub fn allocate(period: u32, offers: &[&TaskOffer]) -> TaskAssignment {
    let mut offers: Vec<&TaskOffer> = offers.to_vec();
    offers.sort_by(|a, b| a.board.cmp(&b.board));
    // Per target: summed importance, the largest cost asked, and who asked.
    let mut tasks: BTreeMap<u8, (u32, u16, Vec<usize>)> = BTreeMap::new();
    for (b, o) in offers.iter().enumerate() {
        for t in &o.tasks {
            let e = tasks.entry(t.target).or_insert((0, 0, Vec::new()));
            e.0 += u32::from(t.importance_milli);
            e.1 = e.1.max(t.cost_milli);
            e.2.push(b);
        }
    }
    let mut order: Vec<(u8, u32, u16, Vec<usize>)> =
        tasks.into_iter().map(|(t, (imp, cost, who))| (t, imp, cost, who)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut left: Vec<u32> = offers.iter().map(|o| o.capacity_milli).collect();
    let mut masks = vec![ModelSet::EMPTY; offers.len()];
    for (target, _, cost, who) in order {
        let cost = u32::from(cost);
        let pick = |cands: &mut dyn Iterator<Item = usize>, left: &[u32]| {
            cands.filter(|&b| left[b] >= cost).max_by(|&a, &b| left[a].cmp(&left[b]).then(b.cmp(&a)))
        };
        let chosen = pick(&mut who.iter().copied(), &left).or_else(|| pick(&mut (0..offers.len()), &left));
        if let Some(b) = chosen {
            left[b] -= cost;
            if usize::from(target) < ModelSet::CAP {
                masks[b].insert(usize::from(target));
            }
        }
    }
    TaskAssignment {
        proto: FLEET_PROTO,
        period,
        boards: offers.iter().zip(masks).map(|(o, m)| (o.board.clone(), m)).collect(),
    }
}

/// [`allocate`] within each group: the offers of the boards `group_of` puts in one group (`None`:
/// no group) are allocated among those boards alone. One allocation a group, in group order (no
/// group first).
pub fn allocate_by_group<'a>(
    period: u32,
    offers: impl IntoIterator<Item = &'a TaskOffer>,
    group_of: impl Fn(&str) -> Option<String>,
) -> Vec<TaskAssignment> {
    let mut by_group: BTreeMap<Option<String>, Vec<&TaskOffer>> = BTreeMap::new();
    for o in offers {
        by_group.entry(group_of(&o.board)).or_default().push(o);
    }
    by_group.values().map(|o| allocate(period, o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::msg::TaskItem;

    #[test]
    fn tasks_stay_within_their_group() {
        // Target 5 drifts on north's boards; only south's board has room for it.
        let n1 = offer("n1", 0, &[(5, 900, 300)]);
        let n2 = offer("n2", 0, &[(5, 800, 300)]);
        let s1 = offer("s1", 1000, &[]);
        let group_of = |b: &str| Some(if b.starts_with('n') { "north" } else { "south" }.to_string());
        // Across the whole fleet it would go to south's board, whose refresh north never receives.
        let whole = allocate(1, &[&n1, &n2, &s1]);
        assert!(whole.boards.iter().any(|(b, m)| b == "s1" && m.contains(5)), "{whole:?}");
        let grouped = allocate_by_group(1, [&n1, &n2, &s1], group_of);
        assert_eq!(grouped.len(), 2);
        for a in &grouped {
            for (b, m) in &a.boards {
                assert!(!(b == "s1" && m.contains(5)), "{grouped:?}");
            }
        }
        // Without groups, one allocation, the whole fleet's.
        assert_eq!(allocate_by_group(1, [&n1, &n2, &s1], |_| None), vec![whole]);
    }

    fn offer(board: &str, capacity: u32, tasks: &[(u8, u16, u16)]) -> TaskOffer {
        TaskOffer {
            proto: FLEET_PROTO,
            board: board.into(),
            model_hash: [0; 8],
            period: 1,
            capacity_milli: capacity,
            tasks: tasks
                .iter()
                .map(|&(target, importance_milli, cost_milli)| TaskItem {
                    target,
                    importance_milli,
                    cost_milli,
                })
                .collect(),
        }
    }

    #[test]
    fn important_tasks_go_to_capable_boards_once() {
        let small = offer("small", 300, &[(1, 900, 300), (2, 100, 300)]);
        let big = offer("big", 1000, &[(1, 800, 300), (3, 50, 300)]);
        let a = allocate(1, &[&small, &big]);
        let mask = |b: &str| a.boards.iter().find(|x| x.0 == b).unwrap().1.bits();
        // Target 1 (most important, asked by both) goes to the most capable board, once.
        assert_eq!(mask("big") & 0b10, 0b10);
        assert_eq!(mask("small") & 0b10, 0);
        // The big board keeps room for one more (3), the small one takes 2.
        assert_eq!(mask("small"), 0b100);
        assert_eq!(mask("big"), 0b1010);
        // A task nobody can fit is not allocated.
        let tiny = offer("tiny", 10, &[(4, 999, 300)]);
        assert!(allocate(1, &[&tiny]).boards[0].1.is_empty());
    }
}
