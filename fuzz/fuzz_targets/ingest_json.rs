//! The ingest API's body: one record or `{"records": [...]}`, each record's fields read
//! as the API reads them and its body validated against the example catalog with
//! `Catalog::validate_body`, the function the API calls.
//!
//! Invariants: nothing panics; a refused body reports at least one error, and every error
//! about a field names a field of the body or of the category; an accepted body holds
//! only fields of the category, every required one, each value within the protocol's
//! size limit; validation is idempotent (the normal form, shown as JSON the way the API
//! shows it, validates to itself); the accepted record salts to a consistent record id.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value as Json;
use tamga_fuzz::{code, example_federation};
use tamga_protocol::limits::MAX_VALUE_BYTES;
use tamga_protocol::{CategoryId, Classification, Digest, Record, RecordHeader, SaltKey, SaltedRecord};

/// The API's batch limit (`MAX_BATCH_RECORDS` in the node's API).
const MAX_BATCH_RECORDS: usize = 1000;

/// The body of `POST /v1/records`, as the API parses it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IngestBody {
    Batch { records: Vec<Json> },
    One(Json),
}

/// One record, as the API parses it (`RecordIn` in the node's API).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RecordIn {
    category: String,
    classification: String,
    body: serde_json::Map<String, Json>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    supersedes: Option<String>,
}

fn time(s: &Option<String>) -> Option<Result<i64, chrono::ParseError>> {
    s.as_deref().map(|s| chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()))
}

fn record(raw: Json) {
    let Ok(r) = serde_json::from_value::<RecordIn>(raw) else { return };
    let created = time(&r.created);
    let expires = time(&r.expires);
    let supersedes = r.supersedes.as_deref().map(str::parse::<Digest>);
    let class = r.classification.parse::<Classification>();
    let Ok(category) = r.category.parse::<CategoryId>() else { return };
    let catalog = &example_federation().catalog;
    let body = match catalog.validate_body(&category, &r.body) {
        Ok(body) => body,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused body without an error");
            let known = catalog.category(&category).map(|c| c.fields.keys().cloned().collect::<Vec<_>>());
            for e in &errors {
                assert!(!e.to_string().is_empty());
                if let Some(f) = e.field() {
                    let in_body = r.body.contains_key(f);
                    let in_category = known.as_ref().is_some_and(|k| k.iter().any(|n| n == f));
                    assert!(in_body || in_category, "error about a field {f:?} that is nowhere: {e}");
                }
            }
            return;
        }
    };
    let cat = catalog.category(&category).expect("an accepted body has a known category");
    for (name, value) in &body {
        assert!(cat.fields.contains_key(name), "accepted field {name:?} is not in {category}");
        assert!(value.text_len() <= MAX_VALUE_BYTES + 8, "accepted value of {} bytes", value.text_len());
    }
    for f in cat.fields.values().filter(|f| f.required) {
        assert!(body.contains_key(&f.name), "accepted body lacks required field {}", f.name);
    }
    // Idempotent: the normal form, as the API shows it, validates to itself.
    let shown: serde_json::Map<String, Json> = body.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    match catalog.validate_body(&category, &shown) {
        Ok(again) => assert_eq!(again, body, "normalising twice changes the body"),
        Err(e) => panic!("a body in normal form is refused: {e:?}\nnormal form: {shown:?}"),
    }
    // The header as the API builds it, when every header field is valid.
    let (Ok(classification), Ok(created_ms), Ok(expires_ms), Ok(supersedes)) =
        (class, created.transpose(), expires.transpose(), supersedes.transpose())
    else {
        return;
    };
    let record = Record {
        header: RecordHeader {
            category,
            classification,
            origin: code("KZ"),
            created_ms: created_ms.unwrap_or(tamga_fuzz::NOW_MS),
            supersedes,
            expires_ms,
        },
        body: body.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let salted = SaltedRecord::new(record, &SaltKey::from_bytes([9; 32]));
    assert!(salted.is_consistent());
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = serde_json::from_slice::<IngestBody>(data) else { return };
    let raws = match parsed {
        IngestBody::Batch { records } => records,
        IngestBody::One(v) => vec![v],
    };
    for raw in raws.into_iter().take(MAX_BATCH_RECORDS) {
        record(raw);
    }
});
