//! `Catalog::validate_body`: what the local API checks a record body with. Each kind of
//! problem is reported, naming its field; values come out normalised.

use std::path::Path;

use serde_json::{json, Map, Value as Json};
use tamga_config::{BodyError, Catalog, Federation};
use tamga_protocol::{CategoryId, Value};

fn catalog() -> Catalog {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example");
    let fed = Federation::load_files(
        &dir.join("roster.toml"),
        &dir.join("catalog.toml"),
        &dir.join("agreements"),
        &dir.join("policies/RU.toml"),
        "RU".parse().expect("code"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    fed.catalog
}

fn cat(s: &str) -> CategoryId {
    s.parse().expect("category")
}

fn body(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn energy() -> Map<String, Json> {
    body(json!({
        "period_start": "2013-07-01",
        "period_end": "2013-07-31",
        "crossing_point": "Khorgos",
        "direction": "export",
        "energy_type": "natural_gas",
        "volume": "001250.500",
        "unit": "thousand_cubic_metres",
        "reported_at": "2013-08-02T09:30:00.250+06:00",
        "contract_reference": "C-2013/77",
    }))
}

#[test]
fn a_valid_body_is_normalised() {
    let out = catalog().validate_body(&cat("energy.transfer"), &energy()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out["volume"], Value::Text("1250.5".into()));
    assert_eq!(out["reported_at"], Value::Text("2013-08-02T03:30:00.250Z".into()));
    assert_eq!(out["period_start"], Value::Text("2013-07-01".into()));
    assert_eq!(out["direction"], Value::Text("export".into()));
    assert_eq!(out.len(), 9);
}

#[test]
fn numbers_lists_and_bools() {
    let c = catalog();
    let mut b = body(json!({
        "detained_on": "2013-08-13",
        "customs_office": "Samara",
        "mark_name": "ACME",
        "goods_description": "sports shoes",
        "quantity": 1200,
        "unit": "pairs",
        "estimated_value_usd": 15000.75,
        "route": ["CN", "KZ"],
        "driver_name": null,
    }));
    let out = c.validate_body(&cat("ipr.infringement"), &b).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out["quantity"], Value::Int(1200));
    assert_eq!(out["estimated_value_usd"], Value::Text("15000.75".into()));
    assert_eq!(out["route"], Value::TextList(vec!["CN".into(), "KZ".into()]));
    assert!(!out.contains_key("driver_name"), "null means absent");
    b.insert("estimated_value_usd".into(), json!(100));
    let out = c.validate_body(&cat("ipr.infringement"), &b).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out["estimated_value_usd"], Value::Text("100".into()));
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let c = catalog();
    let mut b = energy();
    b.remove("crossing_point"); // missing required
    b.insert("volume".into(), json!("12,5")); // invalid decimal
    b.insert("direction".into(), json!("sideways")); // not in enum
    b.insert("period_end".into(), json!(20130731)); // wrong type
    b.insert("pipeline".into(), json!("x")); // unknown field
    b.insert("line_or_pipeline".into(), json!("x".repeat(201))); // too long
    b.insert("reported_at".into(), json!("yesterday")); // not a timestamp
    let errs = c.validate_body(&cat("energy.transfer"), &b).expect_err("invalid");
    let by_field: std::collections::BTreeMap<&str, &BodyError> =
        errs.iter().map(|e| (e.field().expect("names a field"), e)).collect();
    assert_eq!(errs.len(), 7, "{errs:?}");
    assert_eq!(
        by_field.keys().copied().collect::<Vec<_>>(),
        [
            "crossing_point",
            "direction",
            "line_or_pipeline",
            "period_end",
            "pipeline",
            "reported_at",
            "volume"
        ],
    );
    let shown = |f: &str| by_field[f].to_string();
    assert!(matches!(by_field["direction"], BodyError::NotAllowed { .. }));
    assert!(shown("direction").contains("export, import, transit"), "{}", shown("direction"));
    assert!(matches!(by_field["line_or_pipeline"], BodyError::TooLong { len: 201, max: 200, .. }));
    assert!(matches!(by_field["period_end"], BodyError::WrongType { .. }));
    assert!(
        shown("period_end").contains("must be a date string YYYY-MM-DD, not a number"),
        "{}",
        shown("period_end")
    );
    assert!(
        shown("pipeline").contains("unknown field `pipeline`")
            && shown("pipeline").contains("line_or_pipeline")
    );
    assert!(matches!(by_field["reported_at"], BodyError::Invalid { .. }));
    assert!(matches!(by_field["volume"], BodyError::Invalid { .. }));
    assert_eq!(shown("crossing_point"), "missing required field `crossing_point`");
}

// A text within its field's `max_len` of characters but past the protocol's 16 KiB a
// value may have (characters of several bytes each) is refused naming bytes, not
// characters.
#[test]
fn a_text_past_the_value_limit_in_bytes_is_refused_naming_bytes() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example");
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["roster.toml", "catalog.toml"] {
        std::fs::copy(example.join(f), dir.path().join(f)).expect("copies");
    }
    let text = std::fs::read_to_string(dir.path().join("catalog.toml")).expect("reads");
    let summary =
        "[category.\"rms.method\".fields.summary]\ntype = \"text\"\nrequired = true\nmax_len = 4000\n";
    assert_eq!(text.matches(summary).count(), 1);
    let wider = text.replace(summary, &summary.replace("4000", "16384"));
    std::fs::write(dir.path().join("catalog.toml"), wider).expect("writes");
    let fed = Federation::load_files(
        &dir.path().join("roster.toml"),
        &dir.path().join("catalog.toml"),
        &example.join("agreements"),
        &example.join("policies/RU.toml"),
        "RU".parse().expect("code"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // 6,000 characters of three bytes each: 18,000 bytes.
    let b = body(json!({ "title": "t", "method_type": "training", "summary": "\u{6f22}".repeat(6000) }));
    let errs = fed.catalog.validate_body(&cat("rms.method"), &b).expect_err("too many bytes");
    assert!(
        matches!(&errs[..], [BodyError::TooManyBytes { field, len: 18000, max: 16384 }] if field == "summary"),
        "{errs:?}"
    );
    assert!(errs[0].to_string().contains("18000 bytes long in UTF-8"), "{}", errs[0]);
}

#[test]
fn unknown_category() {
    let errs = catalog().validate_body(&cat("ipr.nothing"), &energy()).expect_err("unknown");
    assert_eq!(errs, vec![BodyError::UnknownCategory("ipr.nothing".into())]);
}

#[test]
fn dates_are_real_dates_and_integers_are_whole() {
    let c = catalog();
    let mut b = energy();
    b.insert("period_start".into(), json!("2013-02-29"));
    let errs = c.validate_body(&cat("energy.transfer"), &b).expect_err("no such day");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field(), Some("period_start"));

    let b = body(json!({
        "detained_on": "2013-08-13", "customs_office": "Samara", "mark_name": "ACME",
        "goods_description": "shoes", "quantity": 1.5, "unit": "pairs",
    }));
    let errs = c.validate_body(&cat("ipr.infringement"), &b).expect_err("fraction");
    assert!(matches!(&errs[..], [BodyError::Invalid { field, .. }] if field == "quantity"), "{errs:?}");
}

#[test]
fn too_many_fields_is_refused_before_looking_at_them() {
    let mut b = Map::new();
    for i in 0..100 {
        b.insert(format!("f{i}"), json!(i));
    }
    let errs = catalog().validate_body(&cat("energy.transfer"), &b).expect_err("too many");
    assert!(matches!(errs[..], [BodyError::TooManyFields { count: 100, .. }]));
}

#[test]
fn fields_with_tags() {
    let c = catalog();
    let personal = c.fields_with_tags(&cat("ipr.protected_mark"), ["personal"]);
    assert_eq!(
        personal.into_iter().collect::<Vec<_>>(),
        ["representative_name", "right_holder_contact", "right_holder_name"]
    );
    assert!(c.fields_with_tags(&cat("energy.transfer"), ["personal"]).is_empty());
    assert_eq!(c.fields_with_tags(&cat("energy.transfer"), ["commercial", "personal"]).len(), 3);
}

/// A body whose `volume` (a decimal field) is the JSON text given, read as the API reads
/// it: through serde_json's parser, so a number is what that parser makes of it.
fn volume(c: &Catalog, text: &str) -> Result<Value, Vec<BodyError>> {
    let mut b = energy();
    b.insert("volume".into(), serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}")));
    c.validate_body(&cat("energy.transfer"), &b).map(|mut out| out.remove("volume").expect("volume"))
}

#[test]
fn a_decimal_number_is_kept_exactly() {
    let c = catalog();
    for (sent, kept) in [
        ("12.5", "12.5"),
        ("1e3", "1000"),
        ("-0.25", "-0.25"),
        ("-0.0", "0"),
        ("1.5e-7", "0.00000015"),
        ("0.1", "0.1"),
        ("123456789012.345", "123456789012.345"),
        ("18446744073709551615", "18446744073709551615"),
        ("9007199254740993", "9007199254740993"),
        ("-9223372036854775808", "-9223372036854775808"),
    ] {
        assert_eq!(volume(&c, sent), Ok(Value::Text(kept.into())), "{sent}");
    }
}

#[test]
fn a_decimal_number_that_may_have_lost_digits_is_refused() {
    let c = catalog();
    for sent in [
        "123456789012345678901234567890",
        "3.141592653589793238",
        "18446744073709551616",
        "-9223372036854775809",
        "1234567890123456.5",
        "9007199254740993.0",
        "0.1234567890123456",
    ] {
        let errs = volume(&c, sent).expect_err(sent);
        assert!(
            matches!(&errs[..], [BodyError::Invalid { field, .. }] if field == "volume"),
            "{sent}: {errs:?}"
        );
        let shown = errs[0].to_string();
        assert!(
            shown.starts_with("field `volume`: the number ")
                && shown.contains("may have lost digits")
                && shown.contains("as a string"),
            "{sent}: {shown}"
        );
    }
}

#[test]
fn a_long_decimal_string_is_kept_exactly() {
    let c = catalog();
    for sent in [
        "123456789012345678901234567890",
        "3.141592653589793238",
        "18446744073709551616",
        "0.1000000000000000055511151231257827",
        "-12345678901234567890123456789012345678",
    ] {
        assert_eq!(volume(&c, &format!("{sent:?}")), Ok(Value::Text(sent.into())), "{sent}");
    }
}

#[test]
fn a_decimal_number_has_the_digit_limit_of_its_text() {
    // 1e300 is exact as far as its digits go, but its text has 301 of them: refused as
    // the same digits given as a string are.
    let c = catalog();
    let as_number = volume(&c, "1e300").expect_err("too many digits");
    let as_string = volume(&c, &format!("\"1{}\"", "0".repeat(300))).expect_err("too many digits");
    assert_eq!(as_number, as_string);
    assert!(as_number[0].to_string().contains("more than 38 significant digits"), "{as_number:?}");
    assert!(matches!(&volume(&c, "\"1e3\"").expect_err("no exponent")[..], [BodyError::Invalid { .. }]));
}

#[test]
fn a_received_value_is_held_to_what_ingest_makes_of_a_body() {
    // What another member signed and sent: every value ingest here produced passes...
    let c = catalog();
    let transfer = cat("energy.transfer");
    let out = c.validate_body(&transfer, &energy()).unwrap_or_else(|e| panic!("{e:?}"));
    for (name, value) in &out {
        c.check_value(&transfer, name, value).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // ...and none that ingest would have refused or written otherwise.
    let text = |s: &str| Value::Text(s.into());
    let refused = [
        ("volume", text("001250.500"), "normal form"),
        ("reported_at", text("2013-08-02T09:30:00.250+06:00"), "normal form"),
        ("direction", text("smuggled"), "is not one of"),
        ("crossing_point", Value::Int(1), "must be"),
        ("volume", Value::Int(1250), "normal form"),
        ("period_start", text("2013-02-30"), "is not a date"),
        ("crossing_point", text(&"x".repeat(20_000)), "more than"),
        ("no_such_field", text("x"), "unknown field"),
    ];
    for (name, value, why) in refused {
        let e = c.check_value(&transfer, name, &value).expect_err(name).to_string();
        assert!(e.contains(why), "{name}: {e}");
    }
    let alert = cat("enforcement.alert");
    let many = Value::TextList(vec!["6403".into(); 300]);
    let e = c.check_value(&alert, "hs_codes", &many).expect_err("too many items").to_string();
    assert!(e.contains("300"), "{e}");
}
