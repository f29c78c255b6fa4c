//! Inputs the fuzz targets of `fuzz/` found that the file parsers or the body validation
//! handled wrongly, each reduced to its cause, so the bug stays fixed without running
//! the fuzzer.

use std::path::Path;

use serde_json::{json, Map, Value as Json};
use tamga_config::{ErrorKind, Federation, NodeConfig, SourceFile};
use tamga_protocol::{CategoryId, Value};

fn example() -> Federation {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example");
    Federation::load_files(
        &dir.join("roster.toml"),
        &dir.join("catalog.toml"),
        &dir.join("agreements"),
        &dir.join("policies/KZ.toml"),
        "KZ".parse().expect("member code"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `config_files`: a NUL byte in a comment (an example agreement with one byte changed)
/// gave a syntax error whose message was empty, because the toml crate reports this one
/// without a message: the user saw `path:8:28: ` and nothing else.
#[test]
fn control_character_in_a_comment_is_named() {
    let text = "# Shared: nothing\n# and p\u{0}rsonal data.\nmember = \"KZ\"\n";
    let src = SourceFile::new("nodes/KZ.toml", text);
    let errors = NodeConfig::from_source(&src).expect_err("a NUL byte is not TOML");
    let e = errors.iter().next().expect("one error");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!((e.line, e.col), (2, 8), "{e}");
    assert!(e.message.contains("U+0000"), "the message names the character: {e}");
    // Every other file goes through the same translation of toml errors.
    let text = "[[member]]\n# \u{7}\ncode = \"KZ\"\n";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example");
    let mut sources = Federation::load_files_with_sources(
        &dir.join("roster.toml"),
        &dir.join("catalog.toml"),
        &dir.join("agreements"),
        &dir.join("policies/KZ.toml"),
        "KZ".parse().expect("member code"),
    )
    .expect("the example loads")
    .1;
    sources.roster = SourceFile::new("roster.toml", text);
    let errors = Federation::from_sources(&sources, "KZ".parse().expect("member code"))
        .expect_err("a BEL byte in a comment is not TOML");
    let e = errors.iter().find(|e| e.path == Path::new("roster.toml")).expect("an error in the roster");
    assert_eq!((e.line, e.col), (2, 3), "{e}");
    assert!(e.message.contains("U+0007"), "{e}");
}

fn energy(reported_at: &str) -> Map<String, Json> {
    let v = json!({
        "period_start": "2014-04-01", "period_end": "2014-04-30", "crossing_point": "Alashankou",
        "direction": "export", "energy_type": "lng", "volume": "12.5", "unit": "mwh",
        "reported_at": reported_at,
    });
    match v {
        Json::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}

/// `ingest_json`: a timestamp whose offset carries it past year 9999 (or before year 0)
/// in UTC was accepted, and normalised to `+10000-01-01T…Z`, which is not RFC 3339: the
/// API stored a value it would itself refuse, and every receiver validating the body
/// would refuse it too. Now it is refused at ingest, naming the field.
#[test]
fn timestamp_outside_four_digit_years_in_utc_is_refused() {
    let catalog = example().catalog;
    let cat: CategoryId = "energy.transfer".parse().expect("category");
    for s in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"] {
        let errors = catalog.validate_body(&cat, &energy(s)).expect_err(s);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field(), Some("reported_at"));
        assert!(errors[0].to_string().contains("0000 to 9999"), "{}", errors[0]);
    }
    // The edges themselves are fine, and their normal form validates to itself.
    for (s, normal) in [
        ("9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59Z"),
        ("0000-01-01T00:00:00-00:30", "0000-01-01T00:30:00Z"),
    ] {
        let body = catalog.validate_body(&cat, &energy(s)).expect(s);
        assert_eq!(body.get("reported_at"), Some(&Value::Text(normal.to_owned())));
        let again = catalog.validate_body(&cat, &energy(normal)).expect(normal);
        assert_eq!(again, body);
    }
}
