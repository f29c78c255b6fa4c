//! `roster.toml`: the federation's members, their node identities and addresses.
//!
//! This module owns the roster format, the PeerId → ed25519 key extraction (a PeerId of
//! an ed25519 node is the identity multihash of its protobuf-encoded public key), and the
//! lookups the node needs: member by code, by PeerId, and a member's verifying keys. It
//! refuses PeerIds that are not inlined ed25519 keys, weak keys, PeerIds that are not the
//! one their key's node has, and duplicates, of a PeerId or of a key. It never connects
//! anywhere nor decides who may receive what (that is [`mod@crate::decide`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::Deserialize;
use tamga_protocol::{Digest, MemberCode, VerifyingKey};
use toml::Spanned;

use crate::error::{ConfigError, ErrorKind, Pos, SourceFile};
use crate::limits::{MAX_ADDRS_PER_MEMBER, MAX_MEMBERS, MAX_PEER_IDS_PER_MEMBER};
use crate::parse::{self, AddrUse};

/// The multihash code of an identity (inlined) multihash, as used by ed25519 PeerIds.
const MULTIHASH_IDENTITY: u64 = 0;

/// What a member is to the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A customs service: originates and receives records.
    Member,
    /// An observer such as the organisation's secretariat: party to the agreements that
    /// name it, nothing more.
    Observer,
}

impl Role {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Observer => "observer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// ISO 3166 alpha-2 code (or a user-assigned one such as `XS`).
    pub code: MemberCode,
    /// The service's name.
    pub name: String,
    /// Member or observer.
    pub role: Role,
    /// The PeerIds of the member's nodes, as listed.
    pub peer_ids: Vec<PeerId>,
    /// The ed25519 verifying key inside each PeerId, in the same order.
    pub keys: Vec<VerifyingKey>,
    /// Addresses to dial the member at.
    pub addrs: Vec<Multiaddr>,
    /// Line of the member's `[[member]]` table in the roster.
    pub line: usize,
}

/// The federation's members. Only PeerIds listed here may connect (invariant 5).
#[derive(Debug, Clone)]
pub struct Roster {
    members: BTreeMap<MemberCode, Member>,
    by_peer: HashMap<PeerId, MemberCode>,
    digest: Digest,
    path: std::path::PathBuf,
}

impl Roster {
    /// A member by code.
    pub fn member(&self, code: MemberCode) -> Option<&Member> {
        self.members.get(&code)
    }

    /// The member a PeerId belongs to.
    pub fn member_by_peer(&self, peer: &PeerId) -> Option<&Member> {
        self.by_peer.get(peer).and_then(|c| self.members.get(c))
    }

    /// The verifying key of a PeerId listed in the roster, with its member.
    pub fn key_of_peer(&self, peer: &PeerId) -> Option<(MemberCode, &VerifyingKey)> {
        let m = self.member_by_peer(peer)?;
        let i = m.peer_ids.iter().position(|p| p == peer)?;
        m.keys.get(i).map(|k| (m.code, k))
    }

    /// A member's first (primary) verifying key.
    pub fn verifying_key(&self, code: MemberCode) -> Option<&VerifyingKey> {
        self.members.get(&code).and_then(|m| m.keys.first())
    }

    /// All of a member's verifying keys (one per listed PeerId); empty for a non-member.
    /// A signature by the member is valid if it verifies under any of them.
    pub fn verifying_keys(&self, code: MemberCode) -> &[VerifyingKey] {
        self.members.get(&code).map(|m| m.keys.as_slice()).unwrap_or(&[])
    }

    /// Whether the code is a roster member.
    pub fn contains(&self, code: MemberCode) -> bool {
        self.members.contains_key(&code)
    }

    /// Every member, by code.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Every member code, sorted.
    pub fn codes(&self) -> impl Iterator<Item = MemberCode> + '_ {
        self.members.keys().copied()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the roster is empty (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// SHA-256 of the roster file's bytes (sent in hellos).
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The file it was read from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the roster lists `peer` for the member `code`: a node runs only under a
    /// roster that lists its own PeerId for its member.
    pub fn lists(&self, code: MemberCode, peer: &PeerId) -> bool {
        self.members.get(&code).is_some_and(|m| m.peer_ids.contains(peer))
    }

    /// [`Roster::lists`] as the error that `policy check` and a policy reload report.
    pub fn check_lists(&self, code: MemberCode, peer: &PeerId) -> Result<(), ConfigError> {
        if self.lists(code, peer) {
            return Ok(());
        }
        Err(ConfigError::whole_file(
            ErrorKind::UnknownMember,
            &self.path,
            format!("this node's PeerId {peer} is not listed for {code} in the roster"),
        )
        .with_hint("add it to the member's peer_ids and share the roster with the federation"))
    }
}

/// Why a PeerId string is not usable as a member's node identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    /// Not a PeerId at all.
    #[error("{0:?} is not a PeerId")]
    Malformed(String),
    /// A hashed public key (RSA, large keys) or a key type other than ed25519.
    #[error("PeerId {0} is not an ed25519 PeerId (tamga nodes use ed25519 keys; their PeerIds start with 12D3KooW)")]
    NotEd25519(String),
    /// An ed25519 key of small order, which anyone could forge signatures for.
    #[error("PeerId {0} holds a weak ed25519 key")]
    Weak(String),
    /// An ed25519 key written otherwise than in its node's PeerId (protobuf fields in
    /// another order, unknown fields, over-long varints): the same key under another
    /// PeerId, which no node has and which would let one key stand for two members.
    #[error("PeerId {peer} is not the PeerId of the ed25519 key it carries, which is {canonical}")]
    NotCanonical {
        /// The PeerId as written.
        peer: String,
        /// The PeerId of its key, the one a node with that key has.
        canonical: String,
    },
}

/// The ed25519 verifying key inside a PeerId, refusing anything else, weak keys, and a
/// PeerId that is not the one its key's node has.
pub fn peer_key(peer: &PeerId) -> Result<VerifyingKey, PeerIdError> {
    let (key, canonical) = inline_key(peer)?;
    if canonical != *peer {
        return Err(PeerIdError::NotCanonical { peer: peer.to_string(), canonical: canonical.to_string() });
    }
    Ok(key)
}

/// The ed25519 key inlined in a PeerId however its protobuf is written, and the PeerId
/// of that key (the one its node has, which TLS derives); refuses anything else and weak
/// keys. The two PeerIds differ when the protobuf is not the canonical one.
fn inline_key(peer: &PeerId) -> Result<(VerifyingKey, PeerId), PeerIdError> {
    let not_ed = || PeerIdError::NotEd25519(peer.to_string());
    let mh = peer.as_ref();
    if mh.code() != MULTIHASH_IDENTITY {
        return Err(not_ed());
    }
    let public = libp2p_identity::PublicKey::try_decode_protobuf(mh.digest()).map_err(|_| not_ed())?;
    let ed = public.try_into_ed25519().map_err(|_| not_ed())?;
    let key = VerifyingKey::from_bytes(&ed.to_bytes()).map_err(|_| not_ed())?;
    if key.is_weak() {
        return Err(PeerIdError::Weak(peer.to_string()));
    }
    Ok((key, libp2p_identity::PublicKey::from(ed).to_peer_id()))
}

/// Parse a PeerId string and extract its ed25519 key.
pub fn parse_peer_id(s: &str) -> Result<(PeerId, VerifyingKey), PeerIdError> {
    let peer: PeerId = s.parse().map_err(|_| PeerIdError::Malformed(s.to_owned()))?;
    let key = peer_key(&peer)?;
    Ok((peer, key))
}

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    #[serde(default)]
    member: Vec<Spanned<RawMember>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    code: Spanned<String>,
    name: Spanned<String>,
    role: Option<Spanned<String>>,
    peer_ids: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    addrs: Vec<Spanned<String>>,
}

/// Parse and check a roster. Returns the roster (if the file parsed) and every problem.
pub(crate) fn parse(src: &SourceFile) -> (Option<Roster>, Vec<ConfigError>) {
    let raw: RawRoster = match src.parse() {
        Ok(r) => r,
        Err(e) => return (None, vec![e]),
    };
    let mut errs = Vec::new();
    if raw.member.is_empty() {
        errs.push(
            src.error_at(ErrorKind::Invalid, Pos { line: 1, col: 1 }, "the roster lists no members")
                .with_hint("add one [[member]] table per member service"),
        );
    }
    if raw.member.len() > MAX_MEMBERS {
        errs.push(src.error_at(
            ErrorKind::TooMany,
            Pos { line: 1, col: 1 },
            format!("the roster lists {} members, more than the limit of {MAX_MEMBERS}", raw.member.len()),
        ));
    }
    let mut members: BTreeMap<MemberCode, Member> = BTreeMap::new();
    let mut by_peer: HashMap<PeerId, MemberCode> = HashMap::new();
    // Each key's first listing, canonical or not: line, PeerId as written, member.
    let mut key_lines: HashMap<[u8; 32], (usize, PeerId, Option<MemberCode>)> = HashMap::new();
    for table in &raw.member {
        let line = src.pos(table.span().start).line;
        let m = table.get_ref();
        let code = match parse::member_code(src, &m.code) {
            Ok(c) => Some(c),
            Err(e) => {
                errs.push(e);
                None
            }
        };
        if let Some(code) = &code {
            if let Some(first) = members.get(&code.value) {
                errs.push(
                    src.error_at(
                        ErrorKind::Duplicate,
                        code.pos,
                        format!("member {} is listed twice (first at line {})", code.value, first.line),
                    )
                    .with_hint("each member appears once; list all its PeerIds in one peer_ids array"),
                );
                continue;
            }
        }
        let name = parse::title(src, "name", &m.name).map_err(|e| errs.push(e)).ok();
        let role = match m.role.as_ref().map(|r| (r, r.get_ref().as_str())) {
            None | Some((_, "member")) => Role::Member,
            Some((_, "observer")) => Role::Observer,
            Some((r, other)) => {
                errs.push(src.error(
                    ErrorKind::Invalid,
                    &r.span(),
                    format!("role {other:?} is not `member` or `observer`"),
                ));
                Role::Member
            }
        };
        let ids = m.peer_ids.get_ref();
        if ids.is_empty() {
            errs.push(src.error(
                ErrorKind::Invalid,
                &m.peer_ids.span(),
                "`peer_ids` is empty: a member needs at least one node",
            ));
        }
        if ids.len() > MAX_PEER_IDS_PER_MEMBER {
            errs.push(src.error(
                ErrorKind::TooMany,
                &m.peer_ids.span(),
                format!("{} PeerIds, more than the limit of {MAX_PEER_IDS_PER_MEMBER}", ids.len()),
            ));
        }
        let mut peer_ids = Vec::new();
        let mut keys = Vec::new();
        for id in ids {
            let text = id.get_ref().trim();
            let read = text
                .parse::<PeerId>()
                .map_err(|_| PeerIdError::Malformed(text.to_owned()))
                .and_then(|peer| inline_key(&peer).map(|(key, canonical)| (peer, key, canonical)));
            match read {
                Ok((peer, key, canonical)) => {
                    // By key, not only by PeerId: two PeerIds carrying one key would let that
                    // key's node sign as both members.
                    let pos = src.pos(id.span().start);
                    let first = key_lines.get(key.as_bytes()).cloned();
                    let owner = |o: Option<MemberCode>| o.map(|c| c.to_string()).unwrap_or_default();
                    if first.is_none() {
                        key_lines.insert(key.to_bytes(), (pos.line, peer, code.as_ref().map(|c| c.value)));
                    }
                    if peer != canonical {
                        let mut msg = PeerIdError::NotCanonical {
                            peer: peer.to_string(),
                            canonical: canonical.to_string(),
                        }
                        .to_string();
                        if let Some((line, _, o)) = &first {
                            msg.push_str(&format!("; that key is listed at line {line}, for {}", owner(*o)));
                        }
                        errs.push(src.error_at(ErrorKind::Invalid, pos, msg).with_hint(
                            "list the PeerId that `tamga init` printed for the node: no node has this one",
                        ));
                        continue;
                    }
                    if let Some((line, first_peer, o)) = first {
                        let what = if first_peer == peer {
                            "is listed twice".to_owned()
                        } else {
                            format!("carries the same ed25519 key as PeerId {first_peer}")
                        };
                        errs.push(src.error_at(
                            ErrorKind::Duplicate,
                            pos,
                            format!("PeerId {peer} {what} (first at line {line}, for {})", owner(o)),
                        ));
                        continue;
                    }
                    if let Some(c) = &code {
                        by_peer.insert(peer, c.value);
                    }
                    peer_ids.push(peer);
                    keys.push(key);
                }
                Err(e) => {
                    let kind = match e {
                        PeerIdError::Malformed(_) | PeerIdError::NotCanonical { .. } => ErrorKind::Invalid,
                        PeerIdError::NotEd25519(_) => ErrorKind::NotEd25519,
                        PeerIdError::Weak(_) => ErrorKind::WeakKey,
                    };
                    let err = src.error(kind, &id.span(), e.to_string());
                    errs.push(match kind {
                        ErrorKind::NotEd25519 => err
                            .with_hint("generate the node key with `tamga init`, which makes an ed25519 key"),
                        _ => err,
                    });
                }
            }
        }
        if m.addrs.len() > MAX_ADDRS_PER_MEMBER {
            errs.push(src.error(
                ErrorKind::TooMany,
                &table.span(),
                format!("{} addresses, more than the limit of {MAX_ADDRS_PER_MEMBER}", m.addrs.len()),
            ));
        }
        let mut addrs = Vec::new();
        for a in &m.addrs {
            match parse::multiaddr(a.get_ref(), AddrUse::Dial) {
                Ok(addr) => {
                    let names_other = addr.iter().any(|p| match p {
                        Protocol::P2p(p) => !peer_ids.contains(&p),
                        _ => false,
                    });
                    if names_other {
                        errs.push(src.error(
                            ErrorKind::Invalid,
                            &a.span(),
                            "the address's /p2p/ PeerId is not one of this member's peer_ids",
                        ));
                    } else {
                        addrs.push(addr);
                    }
                }
                Err(msg) => errs.push(src.error(ErrorKind::Invalid, &a.span(), msg)),
            }
        }
        if let Some(code) = code {
            // A bad name is reported above; the member still counts, so that references
            // to it elsewhere do not cascade into "not in the roster" errors.
            let name = name.unwrap_or_else(|| m.name.get_ref().clone());
            members.insert(code.value, Member { code: code.value, name, role, peer_ids, keys, addrs, line });
        }
    }
    let roster = Roster { members, by_peer, digest: src.digest(), path: src.path().to_path_buf() };
    (Some(roster), errs)
}
