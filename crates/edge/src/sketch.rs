//! [`LatencySketch`]: a mergeable, log-bucketed latency histogram (DDSketch-style) whose
//! quantiles are exact to a stated relative error, and its compact encoding.
//!
//! A value `x` (microseconds) falls in bucket `i = ceil(log_γ(x))` with
//! `γ = (1 + α) / (1 − α)`; every value in a bucket is within `α` of the bucket's
//! representative `2γ^i / (γ + 1)`. Sketches merge by adding counts, so a minute's, an
//! hour's and a day's quantiles all keep the same bound.

/// The relative error of every quantile a sketch answers: 1 %.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Largest value kept apart, in microseconds (about 19 hours); larger ones count as it.
pub const MAX_MICROS: u64 = 1 << 36;

/// Buckets needed to reach [`MAX_MICROS`] at [`RELATIVE_ERROR`] (`ceil(ln 2^36 / ln γ)`
/// is 1248).
pub(crate) const BUCKETS: usize = 1250;

/// Version byte of [`LatencySketch::encode`]'s format.
const ENCODING_VERSION: u8 = 1;

/// `ln γ`, written out so the request path does not compute it.
const LN_GAMMA: f64 = 0.020000666706669435;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

/// The bucket of a value in microseconds (0 for anything up to 1 µs).
pub(crate) fn bucket_of(micros: u64) -> usize {
    if micros <= 1 {
        return 0;
    }
    let micros = micros.min(MAX_MICROS) as f64;
    ((micros.ln() / LN_GAMMA).ceil() as usize).min(BUCKETS - 1)
}

/// The value every member of bucket `index` is within [`RELATIVE_ERROR`] of.
fn representative(index: usize) -> f64 {
    let g = gamma();
    2.0 * g.powi(index as i32) / (g + 1.0)
}

/// A mergeable latency histogram with quantiles exact to [`RELATIVE_ERROR`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySketch {
    /// Count per bucket, trimmed after the last non-empty one.
    counts: Vec<u64>,
}

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value in microseconds.
    pub fn record_micros(&mut self, micros: u64) {
        self.add_to_bucket(bucket_of(micros), 1);
    }

    fn add_to_bucket(&mut self, index: usize, count: u64) {
        if count == 0 {
            return;
        }
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += count;
    }

    /// Adds dense per-bucket counts (a worker's accumulator).
    pub(crate) fn add_dense(&mut self, dense: &[u32]) {
        for (index, &count) in dense.iter().enumerate() {
            self.add_to_bucket(index, u64::from(count));
        }
    }

    /// Adds every value of `other` to this sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        for (index, &count) in other.counts.iter().enumerate() {
            self.add_to_bucket(index, count);
        }
    }

    /// How many values were recorded at most `micros` (each counted by its bucket's
    /// representative, so exact to [`RELATIVE_ERROR`] near the bound).
    pub fn count_at_most(&self, micros: f64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .take_while(|(index, _)| representative(*index) <= micros)
            .map(|(_, count)| count)
            .sum()
    }

    /// The sum of the recorded values in microseconds, each taken as its bucket's
    /// representative (exact to [`RELATIVE_ERROR`]).
    pub fn sum_micros(&self) -> f64 {
        self.counts
            .iter()
            .enumerate()
            .map(|(index, &count)| representative(index) * count as f64)
            .sum()
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0 ≤ q ≤ 1) in microseconds: within [`RELATIVE_ERROR`] of the
    /// recorded value of rank `floor(q · (count − 1))`; `None` when empty.
    pub fn quantile_micros(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (total - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen > rank {
                return Some(representative(index));
            }
        }
        self.counts.len().checked_sub(1).map(representative)
    }

    /// The compact form stored per bucket of time: a version byte, then for each
    /// non-empty bucket its index's distance from the previous one and its count, as
    /// LEB128 varints (a few bytes per distinct latency band, not per request).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING_VERSION];
        let mut previous = 0usize;
        for (index, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            put_varint(&mut out, (index - previous) as u64);
            put_varint(&mut out, count);
            previous = index;
        }
        out
    }

    /// Reads what [`LatencySketch::encode`] wrote; `None` when it is not such a sketch.
    pub fn decode(bytes: &[u8]) -> Option<LatencySketch> {
        let (&version, mut rest) = bytes.split_first()?;
        if version != ENCODING_VERSION {
            return None;
        }
        let mut sketch = LatencySketch::new();
        let mut index = 0usize;
        while !rest.is_empty() {
            let delta = take_varint(&mut rest)?;
            let count = take_varint(&mut rest)?;
            index = index.checked_add(usize::try_from(delta).ok()?)?;
            if index >= BUCKETS {
                return None;
            }
            sketch.add_to_bucket(index, count);
        }
        Some(sketch)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of latencies from 50 µs to about 30 s.
    fn samples(n: u64) -> Vec<u64> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let exponent = (state % 10_000) as f64 / 10_000.0 * 13.3;
                50 + exponent.exp() as u64
            })
            .collect()
    }

    #[test]
    fn quantiles_are_within_the_stated_relative_error() {
        let values = samples(20_000);
        let mut sketch = LatencySketch::new();
        for &v in &values {
            sketch.record_micros(v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let truth = sorted[(q * (sorted.len() - 1) as f64).floor() as usize] as f64;
            let answer = sketch.quantile_micros(q).unwrap();
            assert!(
                (answer - truth).abs() <= RELATIVE_ERROR * truth + 1e-9,
                "q={q}: sketch {answer}, true {truth}"
            );
        }
        assert_eq!(sketch.count(), 20_000);
    }

    #[test]
    fn merged_sketches_answer_like_one_sketch_and_survive_encoding() {
        let values = samples(5_000);
        let (mut whole, mut left, mut right) = (LatencySketch::new(), LatencySketch::new(), LatencySketch::new());
        for (i, &v) in values.iter().enumerate() {
            whole.record_micros(v);
            if i % 3 == 0 { &mut left } else { &mut right }.record_micros(v);
        }
        left.merge(&right);
        assert_eq!(left, whole);
        let encoded = whole.encode();
        assert!(encoded.len() < 3 * 1250, "{} bytes", encoded.len());
        assert_eq!(LatencySketch::decode(&encoded), Some(whole));
        assert_eq!(LatencySketch::decode(&[9, 1, 1]), None, "unknown version");
        assert_eq!(LatencySketch::decode(&[1, 0xff]), None, "cut varint");
        assert_eq!(
            LatencySketch::decode(&[1, 0xff, 0xff, 0x7f, 1]),
            None,
            "index out of range"
        );
    }

    #[test]
    fn the_largest_value_fits_the_buckets() {
        let g = gamma();
        assert!((g.ln() - LN_GAMMA).abs() < 1e-15);
        assert!((((MAX_MICROS as f64).ln() / g.ln()).ceil() as usize) < BUCKETS);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), bucket_of(MAX_MICROS));
        assert_eq!(LatencySketch::new().quantile_micros(0.5), None);
    }
}
