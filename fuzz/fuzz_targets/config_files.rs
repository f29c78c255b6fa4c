//! Every file parser of `tamga-config`, through the entry points the node uses: the input
//! is read as the file it looks like — `node.toml` (`NodeConfig::from_source`), or the
//! roster, the catalog, an agreement or the local policy of the example federation, with
//! the other files of `deploy/example` (`Federation::from_sources`).
//!
//! Invariants: nothing panics; every error names a file that was given and a line and
//! column inside it (or none, for the whole file); a federation that loads decides as its
//! explanation says, never lets a confidential or secret record out, has an audience
//! that is exactly the members `decide` allows, and can be compared with the example
//! (`diff`) and warned about (`warnings`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tamga_config::{audience, decide, diff, explain, warnings, Decision, Federation, NodeConfig, SourceFile};
use tamga_fuzz::{check_error_positions, code, example, example_federation, files, members, sources, NOW_MS};
use tamga_protocol::{Classification, MemberCode, RecordHeader};

/// The member a policy text speaks for (its `member = "XX"`), when the roster has it.
fn member_of(text: &str) -> MemberCode {
    text.find("member = \"")
        .and_then(|i| text.get(i + 10..i + 12))
        .and_then(|m| m.parse::<MemberCode>().ok())
        .filter(|m| members().contains(m))
        .unwrap_or_else(|| code("KZ"))
}

fn check_loaded(fed: &Federation) {
    // Each agreement with the categories it covers and one it does not, every level, a
    // record from yesterday; `explain` is the costly part, so the grid stays this small.
    let uncovered = fed.catalog.categories().find(|c| fed.agreements.values().any(|a| !a.covers(&c.id)));
    for a in fed.agreements.values() {
        let cats = fed.catalog.categories().filter(|c| a.covers(&c.id)).chain(uncovered);
        for cat in cats {
            for class in Classification::ALL {
                let header = RecordHeader {
                    category: cat.id.clone(),
                    classification: class,
                    origin: fed.me,
                    created_ms: NOW_MS - 86_400_000,
                    supersedes: None,
                    expires_ms: None,
                };
                let allowed = audience(&header, a, fed, NOW_MS);
                for peer in fed.roster.codes() {
                    let d = decide(&header, a, peer, fed, NOW_MS);
                    let e = explain(&header, a, peer, fed, NOW_MS);
                    assert_eq!(
                        d, e.decision,
                        "decide and explain disagree for {class} to {peer} under {}",
                        a.id
                    );
                    let allow = matches!(d, Decision::Allow { .. });
                    assert!(!allow || class.may_leave_node(), "a {class} record may go to {peer}");
                    assert!(!allow || peer != fed.me, "a record may go to its own node");
                    assert_eq!(allow, allowed.contains(&peer), "audience and decide disagree on {peer}");
                }
            }
        }
    }
    let _ = warnings(fed, NOW_MS);
    let _ = diff(example_federation(), fed, NOW_MS);
    let _ = diff(fed, example_federation(), NOW_MS);
}

fn federation(s: &tamga_config::Sources, member: MemberCode) {
    match Federation::from_sources(s, member) {
        Ok(fed) => check_loaded(&fed),
        Err(errors) => check_error_positions(&errors, &files(s)),
    }
}

/// Which file an input is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Node,
    Roster,
    Catalog,
    Agreement,
    Policy,
}

const ROLES: [Role; 5] = [Role::Node, Role::Roster, Role::Catalog, Role::Agreement, Role::Policy];

/// The files an input looks like (by the keys only that file has), or one chosen by its
/// length when it looks like none. Reading every input as every file would cost five
/// loads of the example catalog per input, for little more coverage.
fn roles(text: &str) -> Vec<Role> {
    let marks: [(Role, &[&str]); 5] = [
        (Role::Node, &["data_dir", "[network]", "[api]", "[audit]"]),
        (Role::Roster, &["[[member]]", "peer_ids"]),
        (Role::Catalog, &["[category", "fields"]),
        (Role::Agreement, &["parties", "effective_from", "retention_days"]),
        (Role::Policy, &["[[share]]", "[[accept]]"]),
    ];
    let found: Vec<Role> =
        marks.iter().filter(|(_, keys)| keys.iter().any(|k| text.contains(k))).map(|(r, _)| *r).collect();
    if found.is_empty() {
        vec![ROLES[text.len() % ROLES.len()]]
    } else {
        found
    }
}

fn read_as(role: Role, text: &str) {
    match role {
        Role::Node => {
            let node = SourceFile::new("nodes/fuzz.toml", text);
            if let Err(errors) = NodeConfig::from_source(&node) {
                check_error_positions(&errors, &[&node]);
            }
        }
        Role::Roster => {
            let mut s = sources(code("KZ"));
            s.roster = SourceFile::new("roster.toml", text);
            federation(&s, code("KZ"));
        }
        Role::Catalog => {
            let mut s = sources(code("KZ"));
            s.catalog = SourceFile::new("catalog.toml", text);
            federation(&s, code("KZ"));
        }
        Role::Agreement => {
            // It replaces the example file of the same id, or joins them.
            let mut s = sources(code("KZ"));
            let same = example::AGREEMENTS.iter().position(|(name, _)| {
                let id = name.trim_end_matches(".toml");
                text.contains(&format!("\"{id}\""))
            });
            let file = SourceFile::new("agreements/fuzz.toml", text);
            match same {
                Some(i) => s.agreements[i] = file,
                None => s.agreements.push(file),
            }
            federation(&s, code("KZ"));
        }
        Role::Policy => {
            let member = member_of(text);
            let mut s = sources(member);
            s.policy = SourceFile::new(format!("policies/{member}.toml"), text);
            federation(&s, member);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Files that are not UTF-8 are refused when read, before any parser sees them.
    let Ok(text) = std::str::from_utf8(data) else { return };
    for role in roles(text) {
        read_as(role, text);
    }
});
