//! Small parsers shared by the file modules: TOML dates, member codes, identifiers, names,
//! multiaddrs. Each turns one spanned TOML value into a checked value or one
//! [`ConfigError`] at that value's position; none of them reads files or knows about
//! other files.

use std::fmt;

use chrono::NaiveDate;
use multiaddr::{Multiaddr, Protocol};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use tamga_protocol::MemberCode;
use toml::Spanned;

use crate::error::{At, ConfigError, ErrorKind, SourceFile};
use crate::limits::{MAX_ADDR_LEN, MAX_NAME_CHARS};

/// A date as written in a file: a TOML local date (`2012-12-05`) or a string
/// (`"2012-12-05"`). Checked later, so that a bad date is one collected error and not
/// the end of the file.
#[derive(Debug, Clone)]
pub(crate) enum RawDate {
    Toml(toml::value::Datetime),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a date such as 2012-12-05")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDate, E> {
                Ok(RawDate::Text(s.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDate, A::Error> {
                let dt = toml::value::Datetime::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawDate::Toml(dt))
            }
        }
        d.deserialize_any(V)
    }
}

/// A checked date, or an error at its position.
pub(crate) fn date(src: &SourceFile, key: &str, raw: &Spanned<RawDate>) -> Result<NaiveDate, ConfigError> {
    let bad = |what: String| {
        src.error(ErrorKind::Invalid, &raw.span(), format!("`{key}` is {what}, not a date"))
            .with_hint("write a date as YYYY-MM-DD, e.g. 2012-12-05")
    };
    match raw.get_ref() {
        RawDate::Toml(dt) => match (dt.date, dt.time, dt.offset) {
            (Some(d), None, None) => {
                NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                    .ok_or_else(|| bad(format!("{dt}")))
            }
            _ => Err(bad(format!("the date-time {dt}"))),
        },
        RawDate::Text(s) => parse_date(s).ok_or_else(|| bad(format!("{s:?}"))),
    }
}

/// `YYYY-MM-DD`, exactly ten characters, a real calendar date.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A member code, or an error at its position.
pub(crate) fn member_code(src: &SourceFile, raw: &Spanned<String>) -> Result<At<MemberCode>, ConfigError> {
    let pos = src.pos(raw.span().start);
    raw.get_ref().parse::<MemberCode>().map(|value| At { value, pos }).map_err(|e| {
        src.error_at(ErrorKind::Invalid, pos, e.to_string())
            .with_hint("member codes are two capital letters, as in the roster")
    })
}

/// A protocol identifier (category or agreement id), or an error at its position.
pub(crate) fn identifier<T>(src: &SourceFile, raw: &Spanned<String>) -> Result<At<T>, ConfigError>
where
    T: std::str::FromStr<Err = tamga_protocol::ParseError>,
{
    let pos = src.pos(raw.span().start);
    raw.get_ref()
        .parse::<T>()
        .map(|value| At { value, pos })
        .map_err(|e| src.error_at(ErrorKind::Invalid, pos, e.to_string()))
}

/// Field names and tags: 1 to 64 of `a-z`, `0-9`, `_`, starting with a letter.
pub(crate) fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= tamga_protocol::limits::MAX_IDENTIFIER_LEN
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A field name or tag, or an error at its position.
pub(crate) fn name(src: &SourceFile, what: &str, raw: &Spanned<String>) -> Result<At<String>, ConfigError> {
    let pos = src.pos(raw.span().start);
    if is_name(raw.get_ref()) {
        Ok(At { value: raw.get_ref().clone(), pos })
    } else {
        Err(src.error_at(
            ErrorKind::Invalid,
            pos,
            format!(
                "{what} {:?} must be 1 to 64 characters of a-z, 0-9 or '_', starting with a letter",
                raw.get_ref()
            ),
        ))
    }
}

/// A human-readable title or name: not blank, at most [`MAX_NAME_CHARS`] characters.
pub(crate) fn title(src: &SourceFile, key: &str, raw: &Spanned<String>) -> Result<String, ConfigError> {
    let s = raw.get_ref().trim();
    if s.is_empty() {
        return Err(src.error(ErrorKind::Invalid, &raw.span(), format!("`{key}` is empty")));
    }
    let n = s.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(src.error(
            ErrorKind::TooMany,
            &raw.span(),
            format!("`{key}` has {n} characters, more than the limit of {MAX_NAME_CHARS}"),
        ));
    }
    Ok(s.to_owned())
}

/// Where a multiaddr is used, which decides the shapes allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrUse {
    /// A local listen address: `/ip4|ip6/…/tcp/PORT` or `/ip4|ip6/…/udp/PORT/quic-v1`.
    Listen,
    /// A roster address to dial: a listen address's shape (the node's transport resolves no
    /// DNS names, so `/dns*` addresses are refused rather than silently never dialled),
    /// optionally followed by `/p2p/PEERID`.
    Dial,
}

/// The listen address shapes, as error messages name them.
const LISTEN_FORMS: &str = "/ip4|ip6/ADDR/tcp/PORT (TCP) or /ip4|ip6/ADDR/udp/PORT/quic-v1 (QUIC)";
/// The dial address shapes, as error messages name them.
const DIAL_FORMS: &str =
    "/ip4|ip6/ADDR/tcp/PORT[/p2p/PEERID] (TCP) or /ip4|ip6/ADDR/udp/PORT/quic-v1[/p2p/PEERID] (QUIC)";

/// A multiaddr of a shape `use_` allows, or a message saying what is wrong and naming the
/// accepted forms: TCP (`/tcp/PORT`) or QUIC v1 (`/udp/PORT/quic-v1`), on an IP address.
/// Other UDP forms are refused by name: plain `/udp/PORT` carries no protocol the node
/// speaks, and `/quic` is QUIC draft-29, which the node's transport does not offer.
pub(crate) fn multiaddr(s: &str, use_: AddrUse) -> Result<Multiaddr, String> {
    if s.len() > MAX_ADDR_LEN {
        return Err(format!("address is longer than {MAX_ADDR_LEN} bytes"));
    }
    let forms = match use_ {
        AddrUse::Listen => LISTEN_FORMS,
        AddrUse::Dial => DIAL_FORMS,
    };
    let addr: Multiaddr = s.parse().map_err(|e| format!("{s:?} is not a multiaddr ({e}); give {forms}"))?;
    let mut it = addr.iter();
    match it.next() {
        Some(Protocol::Ip4(_) | Protocol::Ip6(_)) => {}
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => {
            return Err(format!("{s:?}: DNS names are not resolved by the node; give {forms}"));
        }
        _ => return Err(format!("{s:?} does not start with /ip4/ADDR or /ip6/ADDR; give {forms}")),
    }
    match it.next() {
        Some(Protocol::Tcp(_)) => {}
        Some(Protocol::Udp(_)) => match it.next() {
            Some(Protocol::QuicV1) => {}
            Some(Protocol::Quic) => {
                return Err(format!(
                    "{s:?} is QUIC draft-29 (/quic), which the node does not speak; use /quic-v1: {forms}"
                ));
            }
            None => {
                return Err(format!("{s:?} is plain UDP, which carries no peer channel; give {forms}"));
            }
            Some(p) => {
                return Err(format!("{s:?}: /{} is not a transport the node speaks; give {forms}", p.tag()))
            }
        },
        _ => return Err(format!("{s:?} names no TCP port nor QUIC port; give {forms}")),
    }
    let rest_ok = match (it.next(), use_) {
        (None, _) => true,
        (Some(Protocol::P2p(_)), AddrUse::Dial) => it.next().is_none(),
        _ => false,
    };
    if rest_ok {
        Ok(addr)
    } else {
        let what = match use_ {
            AddrUse::Listen => "listen address",
            AddrUse::Dial => "roster address",
        };
        Err(format!("{s:?} has parts after the transport that a {what} may not have; give {forms}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_strict() {
        assert!(parse_date("2012-12-05").is_some());
        assert!(parse_date("2012-2-05").is_none());
        assert!(parse_date("2013-02-29").is_none());
        assert!(parse_date("2012-12-05T00:00:00Z").is_none());
    }

    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[test]
    fn multiaddr_shapes() {
        assert!(multiaddr("/ip4/127.0.0.1/tcp/7101", AddrUse::Listen).is_ok());
        assert!(multiaddr("/ip6/::1/tcp/7101", AddrUse::Listen).is_ok());
        assert!(multiaddr("/dns/node.kz/tcp/7101", AddrUse::Listen).is_err());
        assert!(multiaddr("/dns/node.kz/tcp/7101", AddrUse::Dial).is_err_and(|e| e.contains("DNS")));
        assert!(multiaddr("/ip4/127.0.0.1", AddrUse::Dial).is_err());
        assert!(multiaddr("127.0.0.1:7101", AddrUse::Dial).is_err());
        assert!(multiaddr(&format!("/ip4/127.0.0.1/tcp/1/p2p/{PEER}"), AddrUse::Dial).is_ok());
    }

    #[test]
    fn quic_v1_addresses_are_accepted_for_listen_and_dial() {
        for use_ in [AddrUse::Listen, AddrUse::Dial] {
            for s in
                ["/ip4/0.0.0.0/udp/7100/quic-v1", "/ip4/127.0.0.1/udp/0/quic-v1", "/ip6/::1/udp/7100/quic-v1"]
            {
                let addr = multiaddr(s, use_).unwrap_or_else(|e| panic!("{s} for {use_:?}: {e}"));
                assert_eq!(addr.to_string(), s);
            }
        }
        let with_peer = format!("/ip4/10.0.0.5/udp/7100/quic-v1/p2p/{PEER}");
        assert!(multiaddr(&with_peer, AddrUse::Dial).is_ok());
        assert!(multiaddr(&format!("/ip6/::1/udp/7100/quic-v1/p2p/{PEER}"), AddrUse::Dial).is_ok());
    }

    /// Every refusal names both accepted forms, so the operator sees what to write.
    fn names_the_forms(e: &str, use_: AddrUse) -> bool {
        let tail = match use_ {
            AddrUse::Listen => "",
            AddrUse::Dial => "[/p2p/PEERID]",
        };
        e.contains(&format!("/ip4|ip6/ADDR/tcp/PORT{tail}"))
            && e.contains(&format!("/ip4|ip6/ADDR/udp/PORT/quic-v1{tail}"))
    }

    #[test]
    fn other_udp_forms_are_refused_naming_the_accepted_ones() {
        for use_ in [AddrUse::Listen, AddrUse::Dial] {
            let e = multiaddr("/ip4/127.0.0.1/udp/7101", use_).expect_err("plain UDP");
            assert!(e.contains("plain UDP") && names_the_forms(&e, use_), "{e}");
            let e = multiaddr("/ip4/127.0.0.1/udp/7101/quic", use_).expect_err("draft-29");
            assert!(e.contains("draft-29") && e.contains("/quic-v1") && names_the_forms(&e, use_), "{e}");
            let e = multiaddr("/ip4/127.0.0.1/udp/7101/webrtc-direct", use_).expect_err("webrtc");
            assert!(e.contains("/webrtc-direct") && names_the_forms(&e, use_), "{e}");
            let e =
                multiaddr("/ip4/127.0.0.1/udp/7101/quic-v1/webtransport", use_).expect_err("webtransport");
            assert!(e.contains("after the transport") && names_the_forms(&e, use_), "{e}");
            let e = multiaddr("/dns4/node.kz/udp/7101/quic-v1", use_).expect_err("DNS");
            assert!(e.contains("DNS") && names_the_forms(&e, use_), "{e}");
            let e = multiaddr("/ip4/127.0.0.1", use_).expect_err("no port");
            assert!(names_the_forms(&e, use_), "{e}");
            let e = multiaddr("127.0.0.1:7101", use_).expect_err("not a multiaddr");
            assert!(names_the_forms(&e, use_), "{e}");
        }
    }

    #[test]
    fn a_listen_address_takes_no_peer_id() {
        for s in
            [format!("/ip4/127.0.0.1/tcp/1/p2p/{PEER}"), format!("/ip4/127.0.0.1/udp/1/quic-v1/p2p/{PEER}")]
        {
            let e = multiaddr(&s, AddrUse::Listen).expect_err("a PeerId on a listen address");
            assert!(e.contains("listen address") && names_the_forms(&e, AddrUse::Listen), "{e}");
        }
        let e = multiaddr(&format!("/ip4/127.0.0.1/udp/1/quic-v1/p2p/{PEER}/p2p/{PEER}"), AddrUse::Dial)
            .expect_err("two PeerIds");
        assert!(names_the_forms(&e, AddrUse::Dial), "{e}");
    }
}
