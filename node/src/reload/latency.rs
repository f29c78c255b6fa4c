//! Reload latency, for `tamga bench`: a real node of the example federation (RU) over a
//! copy of its files, whose policy file is replaced again and again.
//!
//! - *file change → in force*: from the rename that replaces the policy file to the new
//!   digest in the node's [`PolicyCell`](crate::daemon::PolicyCell), with only the reload
//!   task watching (bounded by [`RELOAD_POLL`](super::RELOAD_POLL) +
//!   [`RELOAD_DEBOUNCE`](super::RELOAD_DEBOUNCE) + the load). The edits are spread over
//!   the poll period, so the figures include the wait for the next poll.
//! - *reload call*: [`Reloader::reload`](super::Reloader::reload) as `tamga policy reload`
//!   runs it in the node (read every file, check, compile, swap, queue the audit entry).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Trigger;

/// Samples of each figure.
pub const SAMPLES: usize = 20;
/// Longest wait for one change to be put in force before the measurement fails.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

fn replace(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("toml.edit");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Measure; returns `(figure, value, unit)`.
pub async fn measure(dir: &Path) -> Result<Vec<(&'static str, f64, &'static str)>> {
    let (node, fed) = crate::example::start_node(&dir.join("reload"), "RU").await?;
    let shared = node.shared().clone();
    let policy = fed.join("policies/RU.toml");
    let base = std::fs::read_to_string(&policy)?;

    // Calls first, back to back: the watcher sees the files change all the time and never
    // settles, so it does not compete for the reload lock.
    let (mut calls, mut swaps) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
    for i in 0..SAMPLES {
        replace(&policy, &format!("{base}\n# call sample {i}\n"))?;
        let t = Instant::now();
        let r = shared.reloader.reload(Trigger::Api).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let call = t.elapsed();
        if r.changed {
            calls.push(call);
            swaps.push(r.took);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the watcher settle (it finds the last call's files already in force).
    tokio::time::sleep(super::RELOAD_POLL + super::RELOAD_DEBOUNCE * 2).await;

    let mut watched = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Spread the edits over the poll period.
        let phase = super::RELOAD_POLL.mul_f64((i * 7 % SAMPLES) as f64 / SAMPLES as f64);
        tokio::time::sleep(Duration::from_millis(20) + phase).await;
        let before = shared.fed().policy_digest;
        replace(&policy, &format!("{base}\n# latency sample {i}\n"))?;
        let t = Instant::now();
        while shared.fed().policy_digest == before {
            if t.elapsed() > MAX_WAIT {
                bail!("a policy change was not put in force within {MAX_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        watched.push(t.elapsed());
    }
    node.shutdown().await;

    let max = watched.iter().max().copied().unwrap_or_default();
    Ok(vec![
        ("reload: file change -> in force, median", ms(median(&mut watched)), "ms"),
        ("reload: file change -> in force, max", ms(max), "ms"),
        ("reload: API call in the node, median", ms(median(&mut calls)), "ms"),
        ("reload: read+check+swap, median", ms(median(&mut swaps)), "ms"),
    ])
}
