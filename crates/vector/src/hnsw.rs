//! The HNSW graph (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
//! search using Hierarchical Navigable Small World graphs", 2018), laid out like hnswlib: the
//! vectors, their codes and layer 0's links in flat arrays indexed by slot, the rare upper
//! layers per slot. Insertion is the paper's algorithm 1 with the neighbour-selection heuristic
//! (algorithm 4); search is algorithm 5 with an acceptance test, so tombstones and filters are
//! walked through but never returned. A deleted key keeps its slot as a tombstone (its links
//! still route searches); an updated key gets a new slot.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::kernels;
use crate::metric::Metric;
use crate::quantize::{self, Quantizer};

/// How a graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswParams {
    /// Links per node on the upper layers; layer 0 holds twice as many.
    pub m: usize,
    /// Candidates kept while inserting: larger builds slower and finds better links.
    pub ef_construction: usize,
    /// Candidates kept while searching (at least k): the recall-for-speed knob.
    pub ef_search: usize,
    /// Walk the graph on one-byte codes and re-rank on the exact vectors.
    pub quantize: bool,
    /// Seeds the layer draw, so a build is reproducible.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            quantize: true,
            seed: 42,
        }
    }
}

/// A candidate: distance first, slot to break ties, so heaps order deterministically.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scored {
    pub distance: f32,
    pub slot: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.slot.cmp(&other.slot))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which slots a search may return.
#[derive(Debug, Clone)]
pub struct Allow {
    bits: Vec<u64>,
    count: usize,
}

impl Allow {
    pub(crate) fn from_fn(slots: usize, mut allowed: impl FnMut(u32) -> bool) -> Allow {
        let mut bits = vec![0u64; slots.div_ceil(64)];
        let mut count = 0;
        for slot in 0..slots as u32 {
            if allowed(slot) {
                bits[slot as usize / 64] |= 1 << (slot % 64);
                count += 1;
            }
        }
        Allow { bits, count }
    }

    #[inline(always)]
    pub(crate) fn contains(&self, slot: u32) -> bool {
        self.bits
            .get(slot as usize / 64)
            .is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }

    /// How many slots are allowed.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// Marks of the slots a search has seen, cleared in O(1) by moving to the next epoch.
#[derive(Debug, Default)]
pub(crate) struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, slots: usize) {
        if self.marks.len() < slots {
            self.marks.resize(slots, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks the slot; true when it was already marked.
    #[inline(always)]
    fn check_and_mark(&mut self, slot: u32) -> bool {
        let mark = &mut self.marks[slot as usize];
        let seen = *mark == self.epoch;
        *mark = self.epoch;
        seen
    }
}

/// What a search measures distances to: the query's codes, or its exact vector.
pub(crate) enum Probe<'a> {
    Codes { codes: &'a [u8], sum: u32 },
    Exact(&'a [f32]),
}

/// splitmix64: a small, serialisable generator for the layer draw.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LevelRng(u64);

impl LevelRng {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // (0, 1]: the logarithm below stays finite.
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Graph {
    pub metric: Metric,
    pub dim: usize,
    pub params: HnswParams,
    quantizer: Option<Quantizer>,
    /// Prepared vectors (unit length under cosine), `dim` per slot.
    vectors: Vec<f32>,
    /// One-byte codes, `dim` per slot, when quantised.
    codes: Vec<u8>,
    /// Each slot's sum of codes: the dot product of codes needs it.
    code_sums: Vec<u32>,
    keys: Vec<u64>,
    deleted: Vec<bool>,
    levels: Vec<u8>,
    /// Layer 0: per slot a count then `2m` slots.
    links0: Vec<u32>,
    /// Layers 1..=level: per slot, per layer a count then `m` slots.
    upper: Vec<Vec<u32>>,
    entry: Option<u32>,
    max_level: usize,
    /// Rebuilt from `keys` and `deleted` on load.
    #[serde(skip)]
    slot_of: HashMap<u64, u32>,
    rng: LevelRng,
}

impl Graph {
    pub fn new(metric: Metric, dim: usize, params: HnswParams) -> Graph {
        Graph {
            metric,
            dim,
            params,
            quantizer: None,
            vectors: Vec::new(),
            codes: Vec::new(),
            code_sums: Vec::new(),
            keys: Vec::new(),
            deleted: Vec::new(),
            levels: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            max_level: 0,
            slot_of: HashMap::new(),
            rng: LevelRng(params.seed),
        }
    }

    /// Rebuilds the key map after deserialising.
    pub fn restore_keys(&mut self) {
        self.slot_of = self
            .keys
            .iter()
            .zip(&self.deleted)
            .enumerate()
            .filter(|(_, (_, deleted))| !**deleted)
            .map(|(slot, (key, _))| (*key, slot as u32))
            .collect();
    }

    /// Slots ever used, tombstones included.
    pub fn slots(&self) -> usize {
        self.keys.len()
    }

    /// Keys present.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn tombstones(&self) -> usize {
        self.slots() - self.len()
    }

    pub fn slot_of(&self, key: u64) -> Option<u32> {
        self.slot_of.get(&key).copied()
    }

    pub fn key(&self, slot: u32) -> u64 {
        self.keys[slot as usize]
    }

    pub fn is_live(&self, slot: u32) -> bool {
        !self.deleted[slot as usize]
    }

    pub fn vector(&self, slot: u32) -> &[f32] {
        let at = slot as usize * self.dim;
        &self.vectors[at..at + self.dim]
    }

    fn m0(&self) -> usize {
        2 * self.params.m
    }

    #[inline(always)]
    fn links(&self, slot: u32, level: usize) -> &[u32] {
        let list = if level == 0 {
            let stride = self.m0() + 1;
            &self.links0[slot as usize * stride..(slot as usize + 1) * stride]
        } else {
            let stride = self.params.m + 1;
            &self.upper[slot as usize][(level - 1) * stride..level * stride]
        };
        &list[1..1 + list[0] as usize]
    }

    #[inline(always)]
    fn set_links(&mut self, slot: u32, level: usize, neighbours: &[u32]) {
        let list = if level == 0 {
            let stride = self.m0() + 1;
            &mut self.links0[slot as usize * stride..(slot as usize + 1) * stride]
        } else {
            let stride = self.params.m + 1;
            &mut self.upper[slot as usize][(level - 1) * stride..level * stride]
        };
        list[0] = neighbours.len() as u32;
        list[1..1 + neighbours.len()].copy_from_slice(neighbours);
    }

    /// The probe for a stored slot: its codes, or its exact vector.
    #[inline(always)]
    fn probe_of(&self, slot: u32) -> Probe<'_> {
        if self.quantizer.is_some() {
            let at = slot as usize * self.dim;
            Probe::Codes {
                codes: &self.codes[at..at + self.dim],
                sum: self.code_sums[slot as usize],
            }
        } else {
            Probe::Exact(self.vector(slot))
        }
    }

    /// A query's codes, when the graph is walked on codes.
    pub fn encode_query(&self, query: &[f32]) -> Option<(Vec<u8>, u32)> {
        self.quantizer.map(|quantizer| {
            let mut codes = vec![0u8; self.dim];
            quantizer.encode_into(query, &mut codes);
            let sum = codes.iter().map(|&c| u32::from(c)).sum();
            (codes, sum)
        })
    }

    /// Distance from the probe to a slot, on codes or exactly.
    #[inline(always)]
    fn distance(&self, probe: &Probe, slot: u32) -> f32 {
        let at = slot as usize * self.dim;
        match *probe {
            Probe::Exact(query) => self
                .metric
                .distance(query, &self.vectors[at..at + self.dim]),
            Probe::Codes { codes, sum } => {
                let stored = &self.codes[at..at + self.dim];
                let q = self.quantizer.expect("codes exist only with a quantizer");
                match self.metric {
                    Metric::L2 => q.step * q.step * kernels::l2_u8(codes, stored) as f32,
                    Metric::Cosine | Metric::Dot => {
                        // x ≈ lo + step·c in every component, so the dot product expands to
                        // d·lo² + lo·step·(Σc₁ + Σc₂) + step²·(c₁·c₂).
                        let sums = (sum + self.code_sums[slot as usize]) as f32;
                        let dot = self.dim as f32 * q.lo * q.lo
                            + q.lo * q.step * sums
                            + q.step * q.step * kernels::dot_u8(codes, stored) as f32;
                        if self.metric == Metric::Cosine {
                            1.0 - dot
                        } else {
                            -dot
                        }
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn slot_distance(&self, a: u32, b: u32) -> f32 {
        self.distance(&self.probe_of(a), b)
    }

    /// Makes the codes cover these prepared vectors, re-encoding the graph when the range grows.
    fn cover(&mut self, values: &[f32]) {
        if !self.params.quantize || values.is_empty() {
            return;
        }
        let (min, max) = quantize::range(values);
        let next = match self.quantizer {
            Some(q) if q.covers(min, max) => return,
            Some(q) => q.widened(min, max),
            None => Quantizer::covering(min, max),
        };
        self.quantizer = Some(next);
        for slot in 0..self.slots() {
            let at = slot * self.dim;
            next.encode_into(
                &self.vectors[at..at + self.dim],
                &mut self.codes[at..at + self.dim],
            );
            self.code_sums[slot] = self.codes[at..at + self.dim]
                .iter()
                .map(|&c| u32::from(c))
                .sum();
        }
    }

    /// Inserts prepared vectors (a key already present is replaced: its old slot becomes a
    /// tombstone).
    #[inline(always)]
    pub fn insert_batch(&mut self, items: &[(u64, Vec<f32>)], visited: &mut Visited) {
        let all: Vec<f32> = items.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        self.cover(&all);
        for (key, vector) in items {
            self.insert(*key, vector, visited);
        }
    }

    #[inline(always)]
    fn insert(&mut self, key: u64, vector: &[f32], visited: &mut Visited) {
        if let Some(old) = self.slot_of.remove(&key) {
            self.deleted[old as usize] = true;
        }
        let slot = self.slots() as u32;
        let level = self.draw_level();
        self.vectors.extend_from_slice(vector);
        if let Some(q) = self.quantizer {
            let at = self.codes.len();
            self.codes.resize(at + self.dim, 0);
            q.encode_into(vector, &mut self.codes[at..]);
            self.code_sums
                .push(self.codes[at..].iter().map(|&c| u32::from(c)).sum());
        }
        self.keys.push(key);
        self.deleted.push(false);
        self.levels.push(level as u8);
        self.links0.resize(self.links0.len() + self.m0() + 1, 0);
        self.upper.push(vec![0; level * (self.params.m + 1)]);
        self.slot_of.insert(key, slot);

        let Some(entry) = self.entry else {
            self.entry = Some(slot);
            self.max_level = level;
            return;
        };
        let probe = self.probe_of(slot);
        let mut nearest = Scored {
            distance: self.distance(&probe, entry),
            slot: entry,
        };
        for layer in (level + 1..=self.max_level).rev() {
            nearest = self.greedy(&probe, nearest, layer);
        }
        let mut connections = Vec::new();
        for layer in (0..=level.min(self.max_level)).rev() {
            visited.reset(self.slots());
            visited.check_and_mark(slot);
            let found = self.search_layer(
                &probe,
                nearest,
                self.params.ef_construction,
                layer,
                visited,
                |_| true,
            );
            let chosen = self.select(&found, self.params.m);
            connections.push((layer, chosen));
            nearest = found[0];
        }
        for (layer, chosen) in connections {
            let neighbours: Vec<u32> = chosen.iter().map(|s| s.slot).collect();
            self.set_links(slot, layer, &neighbours);
            for neighbour in chosen {
                self.connect(neighbour.slot, slot, neighbour.distance, layer);
            }
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = Some(slot);
        }
    }

    /// Tombstones a key; false when it is absent.
    pub fn remove(&mut self, key: u64) -> bool {
        match self.slot_of.remove(&key) {
            Some(slot) => {
                self.deleted[slot as usize] = true;
                true
            }
            None => false,
        }
    }

    fn draw_level(&mut self) -> usize {
        let ml = 1.0 / (self.params.m.max(2) as f64).ln();
        ((-self.rng.next_unit().ln() * ml) as usize).min(32)
    }

    /// Adds `new` to `slot`'s links, shrinking them by the heuristic when full.
    #[inline(always)]
    fn connect(&mut self, slot: u32, new: u32, distance: f32, layer: usize) {
        let cap = if layer == 0 { self.m0() } else { self.params.m };
        let current = self.links(slot, layer).to_vec();
        if current.contains(&new) {
            return;
        }
        if current.len() < cap {
            let mut next = current;
            next.push(new);
            self.set_links(slot, layer, &next);
            return;
        }
        let mut candidates: Vec<Scored> = current
            .iter()
            .map(|&other| Scored {
                distance: self.slot_distance(slot, other),
                slot: other,
            })
            .chain(std::iter::once(Scored {
                distance,
                slot: new,
            }))
            .collect();
        candidates.sort_unstable();
        let kept: Vec<u32> = self
            .select(&candidates, cap)
            .iter()
            .map(|s| s.slot)
            .collect();
        self.set_links(slot, layer, &kept);
    }

    /// The heuristic: walk the candidates nearest first and keep one only when it is nearer to
    /// the base than to every one kept, so the links spread in different directions.
    #[inline(always)]
    fn select(&self, sorted: &[Scored], m: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        for candidate in sorted {
            if kept.len() >= m {
                break;
            }
            if kept
                .iter()
                .all(|k| self.slot_distance(k.slot, candidate.slot) >= candidate.distance)
            {
                kept.push(*candidate);
            }
        }
        kept
    }

    #[inline(always)]
    fn greedy(&self, probe: &Probe, mut nearest: Scored, layer: usize) -> Scored {
        loop {
            let mut moved = false;
            for &neighbour in self.links(nearest.slot, layer) {
                let distance = self.distance(probe, neighbour);
                if distance < nearest.distance {
                    nearest = Scored {
                        distance,
                        slot: neighbour,
                    };
                    moved = true;
                }
            }
            if !moved {
                return nearest;
            }
        }
    }

    /// Best-first search of one layer from `start`, keeping `ef` candidates; only slots that
    /// `accept` are returned, but every slot is walked through. Sorted nearest first.
    #[inline(always)]
    fn search_layer(
        &self,
        probe: &Probe,
        start: Scored,
        ef: usize,
        layer: usize,
        visited: &mut Visited,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let mut candidates = BinaryHeap::with_capacity(ef * 4);
        let mut top: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
        visited.check_and_mark(start.slot);
        candidates.push(Reverse(start));
        if accept(start.slot) {
            top.push(start);
        }
        let mut bound = top.peek().map_or(f32::INFINITY, |s| s.distance);
        while let Some(Reverse(current)) = candidates.pop() {
            if current.distance > bound && top.len() >= ef {
                break;
            }
            for &neighbour in self.links(current.slot, layer) {
                if visited.check_and_mark(neighbour) {
                    continue;
                }
                let distance = self.distance(probe, neighbour);
                if top.len() < ef || distance < bound {
                    let scored = Scored {
                        distance,
                        slot: neighbour,
                    };
                    candidates.push(Reverse(scored));
                    if accept(neighbour) {
                        top.push(scored);
                        if top.len() > ef {
                            top.pop();
                        }
                    }
                    if let Some(worst) = top.peek() {
                        bound = worst.distance;
                    }
                }
            }
        }
        top.into_sorted_vec()
    }

    /// The `ef` best candidates the graph finds for a prepared query among live, allowed slots,
    /// re-ranked exactly; the nearest `k` of them, nearest first.
    #[inline(always)]
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&Allow>,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let encoded = self.encode_query(query);
        let probe = match &encoded {
            Some((codes, sum)) => Probe::Codes { codes, sum: *sum },
            None => Probe::Exact(query),
        };
        let mut nearest = Scored {
            distance: self.distance(&probe, entry),
            slot: entry,
        };
        for layer in (1..=self.max_level).rev() {
            nearest = self.greedy(&probe, nearest, layer);
        }
        visited.reset(self.slots());
        let found = self.search_layer(&probe, nearest, ef.max(k), 0, visited, |slot| {
            !self.deleted[slot as usize] && allow.is_none_or(|a| a.contains(slot))
        });
        self.rerank(query, found, k)
    }

    #[inline(always)]
    fn rerank(&self, query: &[f32], found: Vec<Scored>, k: usize) -> Vec<Scored> {
        let mut exact: Vec<Scored> = if self.quantizer.is_some() {
            found
                .into_iter()
                .map(|s| Scored {
                    distance: self.metric.distance(query, self.vector(s.slot)),
                    slot: s.slot,
                })
                .collect()
        } else {
            found
        };
        exact.sort_unstable();
        exact.truncate(k);
        exact
    }

    /// Exact search over the live, allowed slots: the reference, and the fallback for filters
    /// too selective for the graph.
    #[inline(always)]
    pub fn exact(&self, query: &[f32], k: usize, allow: Option<&Allow>) -> Vec<Scored> {
        let mut top: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
        for slot in 0..self.slots() as u32 {
            if self.deleted[slot as usize] || allow.is_some_and(|a| !a.contains(slot)) {
                continue;
            }
            let distance = self.metric.distance(query, self.vector(slot));
            if top.len() < k || distance < top.peek().map_or(f32::INFINITY, |s| s.distance) {
                top.push(Scored { distance, slot });
                if top.len() > k {
                    top.pop();
                }
            }
        }
        top.into_sorted_vec()
    }
}
