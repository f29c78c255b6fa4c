//! The node's secrets: its ed25519 identity (the libp2p key and the key that signs
//! projections, receipts and checkpoints), the salt key from which record salts are
//! derived, and the local API tokens. Files are written with mode 0600 and never
//! overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tamga_protocol::{SaltKey, SigningKey};

/// Why a secret file could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file exists; init never overwrites an identity.
    #[error("{0} already exists; refusing to overwrite an identity (move it away first)")]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not in the expected format.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file is readable by others.
    #[error("{0} is readable by group or others; run `chmod 600` on it")]
    Permissions(PathBuf),
}

/// The node's identity and salt key, as stored in the identity file (hex, JSON).
#[derive(Clone)]
pub struct Identity {
    /// The ed25519 signing key (also the libp2p identity).
    pub signing: SigningKey,
    /// The salt key.
    pub salt_key: SaltKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.peer_id())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    ed25519_secret: String,
    salt_key: String,
}

fn hex32(path: &Path, what: &str, s: &str) -> Result<[u8; 32], IdentityError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdentityError::Format {
        path: path.to_owned(),
        why: format!("{what} is not 64 hexadecimal characters"),
    })?;
    Ok(out)
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Write `contents` to a new file with mode 0600; fail if it exists.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            IdentityError::Exists(path.to_owned())
        } else {
            IdentityError::Io { path: path.to_owned(), source: e }
        }
    })?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| IdentityError::Io { path: path.to_owned(), source: e })
}

/// Read a secret file, refusing one that group or others can read.
pub fn read_secret_file(path: &Path) -> Result<String, IdentityError> {
    let io = |e| IdentityError::Io { path: path.to_owned(), source: e };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(IdentityError::Permissions(path.to_owned()));
    }
    std::fs::read_to_string(path).map_err(io)
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Identity {
        Identity { signing: SigningKey::from_bytes(&random32()), salt_key: SaltKey::generate() }
    }

    /// An identity from a fixed ed25519 secret (the example federation's demo keys).
    pub fn from_secret(secret: [u8; 32]) -> Identity {
        Identity { signing: SigningKey::from_bytes(&secret), salt_key: SaltKey::generate() }
    }

    /// The libp2p keypair for this identity.
    pub fn keypair(&self) -> libp2p::identity::Keypair {
        let mut secret = self.signing.to_bytes();
        // An ed25519 secret of 32 bytes is always accepted.
        libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).expect("32-byte ed25519 secret")
    }

    /// The libp2p PeerId.
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.keypair().public().to_peer_id()
    }

    /// Write the identity to a new file (mode 0600).
    pub fn create(&self, path: &Path) -> Result<(), IdentityError> {
        let f = IdentityFile {
            ed25519_secret: hex::encode(self.signing.to_bytes()),
            salt_key: hex::encode(self.salt_key.to_bytes()),
        };
        let text = serde_json::to_string_pretty(&f)
            .map_err(|e| IdentityError::Format { path: path.to_owned(), why: e.to_string() })?;
        write_secret_file(path, text.as_bytes())
    }

    /// Read the identity file.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let text = read_secret_file(path)?;
        let f: IdentityFile = serde_json::from_str(&text)
            .map_err(|e| IdentityError::Format { path: path.to_owned(), why: e.to_string() })?;
        Ok(Identity {
            signing: SigningKey::from_bytes(&hex32(path, "ed25519_secret", &f.ed25519_secret)?),
            salt_key: SaltKey::from_bytes(hex32(path, "salt_key", &f.salt_key)?),
        })
    }
}

/// The local API's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ingests and reads records, peers and status.
    Operator,
    /// Everything an operator may, and reloads policy.
    Admin,
    /// Reads the audit log and status only.
    Auditor,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

/// The bearer tokens of the three roles (the tokens file, JSON, mode 0600).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// The operator's token.
    pub operator: String,
    /// The administrator's token.
    pub admin: String,
    /// The auditor's token.
    pub auditor: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(…)")
    }
}

/// Compare two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// Three fresh random tokens.
    pub fn generate() -> Tokens {
        Tokens {
            operator: hex::encode(random32()),
            admin: hex::encode(random32()),
            auditor: hex::encode(random32()),
        }
    }

    /// Write to a new file (mode 0600).
    pub fn create(&self, path: &Path) -> Result<(), IdentityError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| IdentityError::Format { path: path.to_owned(), why: e.to_string() })?;
        write_secret_file(path, text.as_bytes())
    }

    /// Read the tokens file.
    pub fn load(path: &Path) -> Result<Tokens, IdentityError> {
        let text = read_secret_file(path)?;
        let t: Tokens = serde_json::from_str(&text)
            .map_err(|e| IdentityError::Format { path: path.to_owned(), why: e.to_string() })?;
        let refuse = |why: String| IdentityError::Format { path: path.to_owned(), why };
        let roles = [(Role::Operator, &t.operator), (Role::Admin, &t.admin), (Role::Auditor, &t.auditor)];
        for (i, (role, tok)) in roles.iter().enumerate() {
            if tok.len() < 32 {
                return Err(refuse("every token must be at least 32 characters".into()));
            }
            // A shared token would grant only the first role that holds it.
            if let Some((other, _)) = roles[..i].iter().find(|(_, o)| o == tok) {
                return Err(refuse(format!(
                    "the {} and {} tokens are the same; give each role a token of its own",
                    other.as_str(),
                    role.as_str()
                )));
            }
        }
        Ok(t)
    }

    /// The role a presented token grants, if any.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let p = presented.as_bytes();
        // Check all three so the time taken does not tell which matched.
        let matches = [
            (constant_time_eq(p, self.operator.as_bytes()), Role::Operator),
            (constant_time_eq(p, self.admin.as_bytes()), Role::Admin),
            (constant_time_eq(p, self.auditor.as_bytes()), Role::Auditor),
        ];
        matches.into_iter().find(|(m, _)| *m).map(|(_, r)| r)
    }

    /// The token of one role.
    pub fn token(&self, role: Role) -> &str {
        match role {
            Role::Operator => &self.operator,
            Role::Admin => &self.admin,
            Role::Auditor => &self.auditor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_with_mode_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.key");
        let id = Identity::generate();
        id.create(&path).expect("creates");
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Identity::load(&path).expect("loads");
        assert_eq!(back.peer_id(), id.peer_id());
        assert_eq!(back.salt_key.to_bytes(), id.salt_key.to_bytes());
        assert!(matches!(Identity::generate().create(&path), Err(IdentityError::Exists(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(Identity::load(&path), Err(IdentityError::Permissions(_))));
    }

    #[test]
    fn tokens_grant_roles() {
        let t = Tokens::generate();
        assert_eq!(t.role_of(&t.operator), Some(Role::Operator));
        assert_eq!(t.role_of(&t.admin), Some(Role::Admin));
        assert_eq!(t.role_of(&t.auditor), Some(Role::Auditor));
        assert_eq!(t.role_of("nope"), None);
        assert_eq!(t.role_of(""), None);
    }

    #[test]
    fn a_token_shared_by_two_roles_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        let t = Tokens::generate();
        let shared = Tokens { auditor: t.operator.clone(), ..t.clone() };
        shared.create(&path).expect("creates");
        let err = Tokens::load(&path).expect_err("a shared token is refused").to_string();
        assert!(
            err.contains("tokens.json") && err.contains("operator and auditor tokens are the same"),
            "{err}"
        );
        std::fs::remove_file(&path).expect("removes");
        t.create(&path).expect("creates");
        assert!(Tokens::load(&path).is_ok());
    }
}
