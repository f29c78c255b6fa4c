//! Policy reload: the one place where the policy set in force is replaced while the node
//! runs, and the `tamga policy …` commands.
//!
//! Who owns what:
//! - [`Reloader`] (a cheap, cloneable handle, kept in [`Shared`](crate::daemon::Shared))
//!   owns replacing the federation in the node's [`PolicyCell`]. Every reload — from the
//!   API (`tamga policy reload`), from SIGHUP, from a change of the files — goes through
//!   [`Reloader::reload`], which holds one async lock for the whole load-check-swap, so
//!   reloads never overlap.
//! - The `reload` task (started by [`Reloader::spawn`], cancelled with the node's token)
//!   polls the files in force every [`RELOAD_POLL`] (unless `[reload] watch_files =
//!   false`), waits until they have been quiet for [`RELOAD_DEBOUNCE`], listens for
//!   SIGHUP, and wakes subscribers when an agreement comes into or goes out of force.
//! - [`routes`] serves `GET /v1/policy` and `POST /v1/policy/reload` (admin);
//!   [`commands`] is `tamga policy check|diff|explain|reload`.
//!
//! What it must never do: put in force a federation that did not load completely and
//! cross-check (the swap is one `PolicyCell::set` of a fully built `Arc<Federation>`, so a
//! decision sees the old set or the new one, never a mix), or whose roster no longer
//! lists this node's PeerId for its member (the next `tamga run` would refuse it); run
//! two reloads at once; touch the network (the roster's effect on connections belongs to
//! whoever [subscribes](Reloader::subscribe)).
//!
//! ```text
//!             API / SIGHUP / files changed and quiet for RELOAD_DEBOUNCE
//!   in force F ───────────────────────────────────────────────▶ loading (lock held)
//!   loading ── every file valid, digest ≠ F ──▶ PolicyCell::set(F'), notify subscribers,
//!                                              audit policy_loaded (digest F') ──▶ in force F'
//!                                              (the entry not stored: set F back ──▶ in force F)
//!   loading ── every file valid, digest = F ──▶ unchanged (nothing audited) ──▶ in force F
//!   loading ── any error ──▶ audit policy_refused (the errors) ──▶ in force F
//! ```
//!
//! A decision made after [`Reloader::reload`] returned uses the new set: whoever decides
//! calls `shared.fed()` at decision time. Records and projections already queued are
//! not re-decided here; a sender holding a queue re-decides it when woken through
//! [`Reloader::subscribe`] (a pause then stops queued sends too), and drops what an
//! agreement that ended no longer allows ([`ended_between`]).
//!
//! | constant            | value  | why                                                          |
//! |---------------------|--------|--------------------------------------------------------------|
//! | [`RELOAD_POLL`]     | 500 ms | how often file metadata is compared (a few `stat`s)          |
//! | [`RELOAD_DEBOUNCE`] | 200 ms | quiet time after the last change, so half-written edits wait |
//! | [`MAX_ERRORS_AUDITED`] | 8   | errors listed in one `policy_refused` entry (the rest counted) |
//!
//! Why polling rather than inotify (the `notify` crate): the files are a handful, a poll
//! is a few `stat`s, it works the same on every filesystem (network mounts and
//! configuration volumes whose files are swapped through symlinks included), and it adds
//! no dependency. Measured latency is in the README (administrators' section).
//!
//! A change is seen through each file's size, modification time, inode (an editor's atomic
//! rename changes the inode) and change time (a `chmod` moves only that), and through the
//! list of agreement files. `tamga policy reload` and SIGHUP always re-read everything;
//! with `node.toml`'s `[reload] watch_files = false` only they do, so that an edit waits
//! for someone to put it in force. `node.toml` itself is not reloaded (its settings need a
//! restart).

pub mod commands;
pub mod latency;
pub mod routes;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tamga_config::check::FileSet;
use tamga_config::{ConfigError, ConfigErrors, ErrorKind, Federation, NodeConfig, PeerId, Sources};
use tamga_protocol::{AgreementId, Digest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{Action, AuditEvent, Outcome};
use crate::daemon::PolicyCell;
use crate::writer::{now_ms, Writer};

/// How often the reload task compares the metadata of the files in force.
pub const RELOAD_POLL: Duration = Duration::from_millis(500);
/// How long the files must stay unchanged after a change before they are reloaded.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);
/// Most errors listed in one `policy_refused` audit entry (the entry says how many more).
pub const MAX_ERRORS_AUDITED: usize = 8;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `tamga policy reload` (the local API).
    Api,
    /// SIGHUP.
    Signal,
    /// The reload task saw the files change.
    FilesChanged,
}

impl Trigger {
    /// A stable name for logs and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Signal => "sighup",
            Trigger::FilesChanged => "file_change",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Api => "tamga policy reload",
            Trigger::Signal => "SIGHUP",
            Trigger::FilesChanged => "a change of the files",
        })
    }
}

/// A reload that left a valid policy set in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// False when the files give the set already in force (nothing was swapped or audited).
    pub changed: bool,
    /// The digest before.
    pub previous: Digest,
    /// The digest in force now.
    pub digest: Digest,
    /// The files whose bytes changed.
    pub files: Vec<PathBuf>,
    /// From the start of reading the files to the new set in force.
    pub took: Duration,
}

/// Why a reload was refused; the policy set in force did not change.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Every error in the files, with path, line and column (none when `unaudited`).
    pub errors: ConfigErrors,
    /// The digest of the set still in force.
    pub in_force: Digest,
    /// The files were valid, but their `policy_loaded` entry could not be stored (the
    /// store's error): a policy in force that the log does not show is not kept.
    pub unaudited: Option<String>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stays = self.in_force.to_hex();
        match &self.unaudited {
            None => write!(
                f,
                "the new policy files are invalid; the policy {stays} stays in force:\n{}",
                self.errors
            ),
            Some(why) => {
                write!(f, "the new policy could not be audited ({why}); the policy {stays} stays in force")
            }
        }
    }
}

impl std::error::Error for Refused {}

/// What the reloader remembers about the set in force.
#[derive(Debug, Clone)]
pub struct InForce {
    /// The federation.
    pub fed: Arc<Federation>,
    /// The exact texts it was built from (`None` when the files on disk already differed
    /// from what the node loaded at start; the next reload fills it).
    pub sources: Option<Arc<Sources>>,
    /// When it was put in force (ms).
    pub since_ms: i64,
    /// What put it in force (`None`: the node's start).
    pub trigger: Option<Trigger>,
}

/// What the reload task does besides serving explicit reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Poll the files and reload on change (`node.toml`'s `[reload] watch_files`).
    pub files: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
}

#[derive(Debug)]
struct Inner {
    files: FileSet,
    /// This node's PeerId: a roster that does not list it for the member is refused, as
    /// `tamga run` would refuse it.
    peer_id: PeerId,
    cell: Arc<PolicyCell>,
    writer: Writer,
    /// Held for a whole reload: one at a time.
    serial: tokio::sync::Mutex<()>,
    tx: watch::Sender<Arc<Federation>>,
    state: Mutex<InForce>,
    /// The files' fingerprint taken before they were first read: the watcher's start, so
    /// that an edit made before the watcher runs is not taken for the files in force.
    first_seen: Fingerprint,
    /// Tests only: reloads kept out of force because their audit entry was not stored.
    #[cfg(test)]
    unaudited: std::sync::atomic::AtomicU64,
}

/// The handle through which the policy set in force is replaced. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

impl Reloader {
    /// A reloader for the files `config` names, for the node `peer_id`, over the node's
    /// policy cell (whose federation is the one the node started with). Reads the files
    /// once to keep the texts in force.
    pub fn new(config: &NodeConfig, peer_id: PeerId, cell: Arc<PolicyCell>, writer: Writer) -> Reloader {
        let files = FileSet::of_node(config);
        let first_seen = Fingerprint::of(&files);
        let fed = cell.get();
        let sources =
            load(&files).ok().filter(|(f, _)| f.policy_digest == fed.policy_digest).map(|(_, s)| Arc::new(s));
        let (tx, _) = watch::channel(fed.clone());
        let state = InForce { fed, sources, since_ms: now_ms(), trigger: None };
        Reloader {
            inner: Arc::new(Inner {
                files,
                peer_id,
                cell,
                writer,
                serial: tokio::sync::Mutex::new(()),
                tx,
                state: Mutex::new(state),
                first_seen,
                #[cfg(test)]
                unaudited: Default::default(),
            }),
        }
    }

    /// The set in force, with its texts.
    pub fn in_force(&self) -> InForce {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A receiver that sees every federation put in force (the current one first), and
    /// is also woken, with the same federation, when an agreement comes into or goes out
    /// of force. For the parts that hold state derived from the policy: the network's
    /// roster, queued sends (re-decide them with `decide(…, now)` on each wake).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Federation>> {
        self.inner.tx.subscribe()
    }

    /// Read every file again, check it, and if valid put it in force; if not, keep the
    /// set in force. Both are audited (`policy_loaded` with the new digest,
    /// `policy_refused` with the errors). Serialized: a second caller waits for the first.
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, Refused> {
        let _one_at_a_time = self.inner.serial.lock().await;
        let started = Instant::now();
        let files = self.inner.files.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&files)).await.unwrap_or_else(|e| {
            Err(ConfigErrors(vec![ConfigError::whole_file(
                ErrorKind::Io,
                &self.inner.files.policy,
                format!("the reload was interrupted: {e}"),
            )]))
        });
        let old = self.inner.cell.get();
        let checked = loaded.and_then(|(fed, sources)| {
            fed.roster
                .check_lists(self.inner.files.member, &self.inner.peer_id)
                .map_err(|e| ConfigErrors(vec![e]))?;
            Ok((fed, sources))
        });
        let (fed, sources) = match checked {
            Ok(x) => x,
            Err(errors) => return Err(self.refuse(trigger, errors, &old).await),
        };
        let files = changed_files(&old, &fed);
        if fed.policy_digest == old.policy_digest {
            let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.sources.get_or_insert_with(|| Arc::new(sources));
            return Ok(Reloaded {
                changed: false,
                previous: old.policy_digest,
                digest: old.policy_digest,
                files,
                took: started.elapsed(),
            });
        }
        let fed = Arc::new(fed);
        let took = started.elapsed();
        // Audited before it is in force (invariant 6): no entry made under the new set can
        // come before the one that says it was loaded, and one not stored keeps it out.
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        let loaded =
            AuditEvent::new(Action::PolicyLoaded, Outcome::Ok).policy(fed.policy_digest).reason(format!(
                "reloaded on {trigger}: policy {} replaces {}; files changed: {}",
                fed.policy_digest.to_hex(),
                old.policy_digest.to_hex(),
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            ));
        if let Err(e) = self.inner.writer.audit_durable(loaded).await {
            #[cfg(test)]
            self.inner.unaudited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "the reload's audit entry is not stored; the policy in force stays");
            return Err(Refused {
                errors: ConfigErrors(Vec::new()),
                in_force: old.policy_digest,
                unaudited: Some(e.to_string()),
            });
        }
        // The swap: from here on every decision that reads the cell sees the new set.
        self.inner.cell.set(fed.clone());
        {
            let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            *st = InForce {
                fed: fed.clone(),
                sources: Some(Arc::new(sources)),
                since_ms: now_ms(),
                trigger: Some(trigger),
            };
        }
        self.inner.tx.send_replace(fed.clone());
        tracing::info!(
            trigger = trigger.as_str(),
            digest = %fed.policy_digest.to_hex(),
            previous = %old.policy_digest.to_hex(),
            took_us = took.as_micros() as u64,
            "policy reloaded"
        );
        Ok(Reloaded { changed: true, previous: old.policy_digest, digest: fed.policy_digest, files, took })
    }

    /// Audit a refused reload, durably before the caller answers (an admin's API call
    /// among them), as the node's other answered events are. A refusal changes nothing,
    /// so an entry that cannot be stored is only logged.
    async fn audit(&self, ev: AuditEvent) {
        if let Err(e) = self.inner.writer.audit_durable(ev).await {
            tracing::warn!(error = %e, "the reload's audit entry is not stored");
        }
    }

    async fn refuse(&self, trigger: Trigger, errors: ConfigErrors, old: &Federation) -> Refused {
        let n = errors.len();
        let mut reason = format!(
            "reload on {trigger} refused; policy {} stays in force; {n} error{}:",
            old.policy_digest.to_hex(),
            if n == 1 { "" } else { "s" }
        );
        // One line, so that the entry reads well in `tamga audit query`'s table.
        for e in errors.iter().take(MAX_ERRORS_AUDITED) {
            match e.line {
                0 => reason.push_str(&format!(" {}: {};", e.path.display(), e.message)),
                l => reason.push_str(&format!(" {}:{l}:{}: {};", e.path.display(), e.col, e.message)),
            }
        }
        if n > MAX_ERRORS_AUDITED {
            reason.push_str(&format!(" and {} more", n - MAX_ERRORS_AUDITED));
        }
        self.audit(AuditEvent::new(Action::PolicyRefused, Outcome::Refused).reason(reason)).await;
        tracing::warn!(
            trigger = trigger.as_str(),
            errors = n,
            "policy reload refused; the old policy stays in force"
        );
        Refused { errors, in_force: old.policy_digest, unaudited: None }
    }

    /// Start the reload task: file polling and SIGHUP as `opts` says, agreement
    /// boundaries always. It ends when `cancel` fires.
    pub fn spawn(&self, opts: WatchOptions, cancel: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("reload", member = %this.inner.files.member);
            tracing::Instrument::instrument(this.run(opts, cancel), span).await;
        })
    }

    async fn run(self, opts: WatchOptions, cancel: CancellationToken) {
        let mut hup = if opts.sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with `tamga policy reload`");
                    None
                }
            }
        } else {
            None
        };
        let mut seen = self.inner.first_seen.clone();
        if self.in_force().sources.is_none() && opts.files {
            // The files changed between the node's start and now.
            let _ = self.reload(Trigger::FilesChanged).await;
        }
        let mut was_in_force = in_force_ids(&self.inner.cell.get(), now_ms());
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(()) = next_hup(&mut hup) => {
                    let _ = self.reload(Trigger::Signal).await;
                }
                _ = tick.tick() => {
                    if opts.files {
                        let now = self.fingerprint().await;
                        if now != seen {
                            let Some(settled) = self.settle(now, &cancel).await else { break };
                            let before = std::mem::replace(&mut seen, settled);
                            let reloaded = self.reload(Trigger::FilesChanged).await;
                            if let Err(Refused { unaudited: Some(_), .. }) = reloaded {
                                // Kept out of force for want of its audit entry, not for
                                // its files: tried again at the next tick.
                                seen = before;
                            }
                        }
                    }
                    let fed = self.inner.cell.get();
                    let ids = in_force_ids(&fed, now_ms());
                    if ids != was_in_force {
                        tracing::info!(in_force = ?ids, "agreements in force changed");
                        was_in_force = ids;
                        self.inner.tx.send_replace(fed);
                    }
                }
            }
        }
        tracing::debug!("reload task stopped");
    }

    /// Wait until the files stay unchanged for [`RELOAD_DEBOUNCE`]; `None` if cancelled.
    async fn settle(&self, mut last: Fingerprint, cancel: &CancellationToken) -> Option<Fingerprint> {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(RELOAD_DEBOUNCE) => {}
            }
            let again = self.fingerprint().await;
            if again == last {
                return Some(again);
            }
            last = again;
        }
    }

    async fn fingerprint(&self) -> Fingerprint {
        let files = self.inner.files.clone();
        tokio::task::spawn_blocking(move || Fingerprint::of(&files)).await.unwrap_or_default()
    }
}

async fn next_hup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Read and check every file of a node.
fn load(files: &FileSet) -> Result<(Federation, Sources), ConfigErrors> {
    Federation::load_files_with_sources(
        &files.roster,
        &files.catalog,
        &files.agreements,
        &files.policy,
        files.member,
    )
}

/// The files whose bytes differ between two sets (by path).
fn changed_files(old: &Federation, new: &Federation) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = new
        .file_digests
        .iter()
        .filter(|(p, d)| old.file_digests.get(*p) != Some(d))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(old.file_digests.keys().filter(|p| !new.file_digests.contains_key(*p)).cloned());
    out.sort();
    out
}

/// The agreements in force at `now_ms`.
fn in_force_ids(fed: &Federation, now_ms: i64) -> Vec<AgreementId> {
    fed.agreements.values().filter(|a| a.in_force(now_ms)).map(|a| a.id.clone()).collect()
}

/// The agreements of `fed` that went out of force in `(from_ms, to_ms]`: what a sender
/// woken by [`Reloader::subscribe`] drops from its queues (and audits as withheld).
pub fn ended_between(fed: &Federation, from_ms: i64, to_ms: i64) -> Vec<AgreementId> {
    fed.agreements
        .values()
        .filter(|a| a.effective_until_ms().is_some_and(|u| from_ms < u && u <= to_ms))
        .map(|a| a.id.clone())
        .collect()
}

/// Size, modification time, inode and change time of each file in force, and the list of
/// agreement files: what the reload task compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<FileMeta>)>);

/// Size, modification time (if the filesystem keeps one), inode and change time of one
/// file. The change time also moves with a `chmod` or `chown`, which change nothing else:
/// a file refused because the node could not read it is read again once its permissions
/// are mended. No one can set it back, so a write that keeps size and modification time is
/// seen too.
type FileMeta = (u64, Option<SystemTime>, u64, (i64, i64));

impl Fingerprint {
    fn of(files: &FileSet) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        let mut paths = vec![files.roster.clone(), files.catalog.clone(), files.policy.clone()];
        match std::fs::read_dir(&files.agreements) {
            Ok(entries) => {
                let mut agreements: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                agreements.sort();
                paths.extend(agreements);
            }
            Err(_) => paths.push(files.agreements.clone()),
        }
        Fingerprint(
            paths
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p)
                        .ok()
                        .map(|m| (m.len(), m.modified().ok(), m.ino(), (m.ctime(), m.ctime_nsec())));
                    (p, meta)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An edit the watcher found while the store could not write its audit entry stays out
    // of force, and is put in force at a later tick once the store writes again, with no
    // further change to the files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_kept_out_for_want_of_its_audit_entry_is_put_in_force_once_it_can_be() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let (node, files) = crate::example::start_node(dir.path(), "RU").await.expect("starts");
        let shared = node.shared().clone();
        let before = shared.fed().policy_digest;
        let store = &shared.store;
        store.fail_commits(u64::MAX);
        let unaudited = || shared.reloader.inner.unaudited.load(std::sync::atomic::Ordering::Relaxed);
        let policy = files.join("policies/RU.toml");
        let text = std::fs::read_to_string(&policy).expect("reads");
        std::fs::write(&policy, text.replace("except = [\"TJ\"]", "except = [\"TJ\", \"KZ\"]"))
            .expect("writes");
        // The watcher's reload tried, and its entry's write failed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while unaudited() == 0 {
            assert!(std::time::Instant::now() < deadline, "the watcher did not try the edit");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(shared.fed().policy_digest, before, "not in force unaudited");
        store.fail_commits(0);
        while shared.fed().policy_digest == before {
            assert!(std::time::Instant::now() < deadline, "the edit was not tried again");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        node.shutdown().await;
    }

    fn example_files(dir: &std::path::Path) -> FileSet {
        crate::example::write_to(dir).expect("writes the example");
        let layout = tamga_config::check::FederationDir::new(dir);
        FileSet::in_dir(&layout, "RU".parse().expect("a code"))
    }

    #[test]
    fn agreements_that_end_are_found_by_their_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = example_files(dir.path());
        let p = files.agreements.join("ru-kz-enforcement.toml");
        let text = std::fs::read_to_string(&p).expect("reads");
        let text = text.replace(
            "effective_from = 2012-07-01\n",
            "effective_from = 2012-07-01\neffective_until = 2020-06-30\n",
        );
        std::fs::write(&p, text).expect("writes");
        let (fed, _) = load(&files).expect("loads");
        // 2020-07-01T00:00:00Z is the first instant no longer in force.
        let end = 1_593_561_600_000;
        let id: AgreementId = "ru-kz-enforcement".parse().expect("an id");
        assert_eq!(ended_between(&fed, end - 1000, end), vec![id.clone()]);
        assert!(ended_between(&fed, end, end + 1000).is_empty());
        assert!(ended_between(&fed, end - 2000, end - 1000).is_empty());
        assert!(in_force_ids(&fed, end - 1).contains(&id));
        assert!(!in_force_ids(&fed, end).contains(&id));
    }

    #[test]
    fn the_fingerprint_sees_edits_renames_and_new_agreement_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = example_files(dir.path());
        let before = Fingerprint::of(&files);
        assert_eq!(before, Fingerprint::of(&files), "stable while nothing changes");
        // An edit that changes the size.
        std::fs::write(&files.policy, std::fs::read_to_string(&files.policy).expect("reads") + "\n#\n")
            .expect("writes");
        let edited = Fingerprint::of(&files);
        assert_ne!(before, edited);
        // The same bytes written aside and renamed over it: a new inode.
        let tmp = files.policy.with_extension("new");
        std::fs::copy(&files.policy, &tmp).expect("copies");
        std::fs::rename(&tmp, &files.policy).expect("renames");
        assert_ne!(edited, Fingerprint::of(&files));
        // A new agreement file.
        let now = Fingerprint::of(&files);
        std::fs::write(files.agreements.join("zz-new.toml"), "id = \"zz\"\n").expect("writes");
        assert_ne!(now, Fingerprint::of(&files));
        // A non-TOML file in the directory is not an agreement.
        let now = Fingerprint::of(&files);
        std::fs::write(files.agreements.join("README"), "notes").expect("writes");
        assert_eq!(now, Fingerprint::of(&files));
        // Its permissions changed (a file refused as unreadable, mended by chmod). The
        // kernel keeps file times at its clock tick: wait one out, so that the change
        // time moves.
        use std::os::unix::fs::PermissionsExt;
        let tick = std::time::Duration::from_millis(50);
        let now = Fingerprint::of(&files);
        std::thread::sleep(tick);
        let mode = std::fs::metadata(&files.policy).expect("reads").permissions().mode();
        std::fs::set_permissions(&files.policy, std::fs::Permissions::from_mode(mode ^ 0o004))
            .expect("chmod");
        assert_ne!(now, Fingerprint::of(&files));
        // Rewritten in place to the same size, its modification time set back.
        let now = Fingerprint::of(&files);
        std::thread::sleep(tick);
        let mtime = std::fs::metadata(&files.policy).expect("reads").modified().expect("mtime");
        let text = std::fs::read_to_string(&files.policy).expect("reads");
        std::fs::write(&files.policy, text.replacen("member", "MEMBER", 1)).expect("writes");
        std::fs::File::options()
            .write(true)
            .open(&files.policy)
            .expect("opens")
            .set_modified(mtime)
            .expect("sets mtime");
        assert_ne!(now, Fingerprint::of(&files));
    }
}
