//! Checking a node's audit log against a sequence of policy reloads made while it worked.
//!
//! A test records, on the wall clock the node's audit entries use, when each reload's
//! files were changed and when the reload call returned ([`ReloadMark`]), and when each
//! ingest request started and ended ([`IngestMark`]). The checks here then hold the log
//! to what hot reload promises:
//!
//! - [`check_entries_carry_complete_policies`]: every entry carries the digest of a
//!   policy set that was in force (never a half-loaded one: no other digest exists);
//! - [`check_ingests_follow_reloads`]: a record ingested wholly between a reload's return
//!   and the next change of files carries exactly the digest in force then;
//! - [`check_reload_entries`]: one `policy_loaded` entry per reload that changed the
//!   policy, carrying the new digest; one `policy_refused` (at least) per refused reload,
//!   carrying the digest that stayed in force;
//! - [`check_not_received_while_paused`]: the paused member's own node never receives
//!   (by push or by pull) a record ingested after the reload that paused it returned,
//!   before the policy changed again.
//!
//! For the federation engineer: [`check_sent_under_deciding_policy`] is the stronger
//! send check — no `sent` entry to a member carries the digest of a policy that pauses
//! it — which holds once each `sent` entry carries the digest of the policy its decision
//! was made under (`AuditEvent::policy(fed.policy_digest)` at the decision), instead of
//! the digest the writer fills in when it appends.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One reload, as the test saw it.
#[derive(Debug, Clone)]
pub struct ReloadMark {
    /// Wall-clock ms just before the files were changed.
    pub changed_ms: i64,
    /// Wall-clock ms when the reload call returned.
    pub returned_ms: i64,
    /// The policy digest in force when it returned (hex).
    pub digest: String,
    /// Whether the reload was refused (the files were invalid).
    pub refused: bool,
    /// Whether the policy changed (a `policy_loaded` entry is expected).
    pub changed: bool,
    /// `(member, agreement)` pairs the policy in force pauses.
    pub paused: Vec<(String, String)>,
}

/// One ingest request, as the test saw it.
#[derive(Debug, Clone)]
pub struct IngestMark {
    /// Wall-clock ms when the request was sent.
    pub started_ms: i64,
    /// Wall-clock ms when the answer came.
    pub ended_ms: i64,
    /// The record ids it stored.
    pub ids: Vec<String>,
}

/// Milliseconds since the Unix epoch, on the clock the node's audit entries use.
pub fn wall_ms() -> i64 {
    tamga_node::writer::now_ms()
}

/// Every audit entry of a running node, in log order, as JSON.
pub fn audit_entries(node: &tamga_node::daemon::Node) -> Vec<Value> {
    node.shared()
        .store
        .audit_entries(1, u64::MAX)
        .map(|r| {
            let (_, _, raw) = r.expect("the audit log reads");
            serde_json::from_slice(&raw).expect("an entry is JSON")
        })
        .collect()
}

/// The records a `received` entry took in: those its projections list (an entry lists
/// what one push or pull brought in under one stream), or the one it names.
pub fn received_records(e: &Value) -> Vec<&str> {
    if e["action"] != "received" {
        return Vec::new();
    }
    match e["projections"].as_array() {
        Some(ps) => ps.iter().filter_map(|p| p["record"].as_str()).collect(),
        None => e["record"].as_str().into_iter().collect(),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The digests in force, in order: `initial`, then after each reload.
fn digests(initial: &str, reloads: &[ReloadMark]) -> Vec<String> {
    std::iter::once(initial.to_owned()).chain(reloads.iter().map(|r| r.digest.clone())).collect()
}

/// Every entry carries the digest of a policy set that was in force at some point.
pub fn check_entries_carry_complete_policies(initial: &str, reloads: &[ReloadMark], entries: &[Value]) {
    let known: BTreeSet<String> = digests(initial, reloads).into_iter().collect();
    for e in entries {
        assert!(known.contains(s(&e["policy"])), "entry {} carries an unknown policy digest: {e}", e["seq"]);
    }
}

/// `(from_ms, to_ms, digest)`: the windows during which one policy was certainly in
/// force: from a reload's return (or the start) to the next change of files.
fn windows(initial: &str, start_ms: i64, reloads: &[ReloadMark]) -> Vec<(i64, i64, String, usize)> {
    let mut out = Vec::new();
    let mut from = start_ms;
    let mut digest = initial.to_owned();
    for (k, r) in reloads.iter().enumerate() {
        out.push((from, r.changed_ms, digest.clone(), k));
        from = r.returned_ms;
        digest = r.digest.clone();
    }
    out.push((from, i64::MAX, digest, reloads.len()));
    out
}

/// Every record ingested by a request that started after a reload returned and ended
/// before the next change of files carries exactly the digest in force then. Returns how
/// many records were checked that way.
pub fn check_ingests_follow_reloads(
    initial: &str,
    start_ms: i64,
    reloads: &[ReloadMark],
    ingests: &[IngestMark],
    entries: &[Value],
) -> usize {
    let by_record: BTreeMap<&str, &Value> =
        entries.iter().filter(|e| e["action"] == "ingested").map(|e| (s(&e["record"]), e)).collect();
    let mut checked = 0;
    for w in windows(initial, start_ms, reloads) {
        for i in ingests.iter().filter(|i| i.started_ms > w.0 && i.ended_ms < w.1) {
            for id in &i.ids {
                let e = by_record.get(id.as_str()).unwrap_or_else(|| panic!("no ingested entry for {id}"));
                assert_eq!(
                    s(&e["policy"]),
                    w.2,
                    "record {id} was ingested after reload {} returned, under another policy: {e}",
                    w.3
                );
                checked += 1;
            }
        }
    }
    checked
}

/// The reloads' own entries: each reload that changed the policy has a `policy_loaded`
/// entry with its new digest; each refused one a `policy_refused` entry (the file watcher
/// may add more) carrying the digest still in force; nothing else loads or refuses.
pub fn check_reload_entries(initial: &str, reloads: &[ReloadMark], entries: &[Value]) {
    let loaded: Vec<&Value> = entries.iter().filter(|e| e["action"] == "policy_loaded").collect();
    let changes: Vec<&ReloadMark> = reloads.iter().filter(|r| r.changed).collect();
    assert_eq!(loaded.len(), changes.len(), "one policy_loaded per change: {loaded:#?}");
    for (e, r) in loaded.iter().zip(&changes) {
        assert_eq!(s(&e["policy"]), r.digest, "policy_loaded carries the new digest: {e}");
        assert!(e["time_ms"].as_i64().is_some_and(|t| t >= r.changed_ms), "{e}");
    }
    let refused: Vec<&Value> = entries.iter().filter(|e| e["action"] == "policy_refused").collect();
    let expected = reloads.iter().filter(|r| r.refused).count();
    assert!(refused.len() >= expected, "{} refusals audited, {expected} expected", refused.len());
    let all = digests(initial, reloads);
    for e in refused {
        assert_eq!(e["outcome"], "refused");
        assert!(all.iter().any(|d| d == s(&e["policy"])), "{e}");
        assert!(e["reason"].as_str().is_some_and(|r| r.contains("stays in force")), "{e}");
    }
}

/// In the log of the receiving `member`'s node: no `received` entry under `agreement`
/// for a record the origin ingested (by a request that started) after a reload pausing
/// `member` returned, appended before the origin's files changed again — whether it came
/// by push or by pull. Returns how many such records were watched.
pub fn check_not_received_while_paused(
    reloads: &[ReloadMark],
    ingests: &[IngestMark],
    receiver_entries: &[Value],
    member: &str,
    agreement: &str,
) -> usize {
    let mut checked = 0;
    for (k, r) in reloads.iter().enumerate() {
        if !r.paused.iter().any(|(m, a)| m == member && a == agreement) {
            continue;
        }
        let until = reloads.get(k + 1).map_or(i64::MAX, |n| n.changed_ms);
        let ids: BTreeSet<&str> = ingests
            .iter()
            .filter(|i| i.started_ms > r.returned_ms && i.started_ms < until)
            .flat_map(|i| i.ids.iter().map(String::as_str))
            .collect();
        checked += ids.len();
        for e in receiver_entries
            .iter()
            .filter(|e| e["agreement"] == agreement && received_records(e).iter().any(|id| ids.contains(id)))
        {
            assert!(
                e["time_ms"].as_i64().is_some_and(|t| t >= until),
                "{member} received a record ingested after reload {k} paused it, before the pause was lifted: {e}"
            );
        }
    }
    checked
}

/// The stronger send check: no `sent` entry to a member under an agreement carries the
/// digest of a policy that pauses it. Needs `sent` entries to carry the digest their
/// decision was made under (see the module documentation).
pub fn check_sent_under_deciding_policy(reloads: &[ReloadMark], entries: &[Value]) {
    let pausing: BTreeMap<&str, &Vec<(String, String)>> =
        reloads.iter().map(|r| (r.digest.as_str(), &r.paused)).collect();
    let sent: Vec<&Value> = entries.iter().filter(|e| e["action"] == "sent").collect();
    // The check below is over something: pushes to KZ were made.
    assert!(sent.iter().any(|e| e["peer"] == "KZ"), "no send to KZ at all");
    for e in sent {
        if let Some(paused) = pausing.get(s(&e["policy"])) {
            assert!(
                !paused.iter().any(|(m, a)| e["peer"] == m.as_str() && e["agreement"] == a.as_str()),
                "a send decided under a policy that pauses its receiver: {e}"
            );
        }
    }
}
