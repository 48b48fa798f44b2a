//! Crash points for tests: `KAIROS_FAULTS=pipeline.after_commit=3` aborts the process the third
//! time a pipeline passes that point, so a crash test can land exactly between two steps of a
//! multi-step write (a checkpoint and its rows' delivery, a dataset's files and its catalog
//! entry, a model's artifact and its registry entry), which a kill at a random moment rarely
//! hits. Unset, a point costs one environment lookup.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static HITS: Mutex<Vec<(&'static str, AtomicU64)>> = Mutex::new(Vec::new());

/// Aborts the process if `point` is armed in `KAIROS_FAULTS` and this is its armed hit.
pub fn point(point: &'static str) {
    let Ok(faults) = std::env::var("KAIROS_FAULTS") else {
        return;
    };
    let Some(armed) = faults.split(',').find_map(|f| {
        let (name, n) = f.split_once('=')?;
        (name == point).then(|| n.parse::<u64>().ok()).flatten()
    }) else {
        return;
    };
    let mut hits = HITS.lock().expect("lock");
    let count = match hits.iter().find(|(p, _)| *p == point) {
        Some((_, c)) => c.fetch_add(1, Ordering::SeqCst) + 1,
        None => {
            hits.push((point, AtomicU64::new(1)));
            1
        }
    };
    if count == armed {
        eprintln!("fault injected at {point} (hit {count}): aborting");
        std::process::abort();
    }
}
