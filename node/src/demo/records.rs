//! The demo's records: a believable few days of exchanges between the customs services,
//! per scene and per member, built from the example catalog's fields (`deploy/example/
//! catalog.toml`). Names of companies are real brands as they appear in customs IPR
//! registers; people, document numbers and contracts are invented. Dates are relative to
//! today, so that no record is ever past its agreement's retention.
//!
//! Each scene is chosen to show one thing the agreements and policies do; the comments
//! say what each record is for.

use chrono::{Datelike, NaiveDate, Utc};
use serde_json::{json, Value};

/// Dates relative to today.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dates {
    today: NaiveDate,
}

impl Dates {
    pub(super) fn now() -> Dates {
        Dates { today: Utc::now().date_naive() }
    }

    /// `n` days ago, YYYY-MM-DD.
    fn ago(&self, n: i64) -> String {
        (self.today - chrono::Duration::days(n)).format("%Y-%m-%d").to_string()
    }

    /// `n` days from now, YYYY-MM-DD.
    fn ahead(&self, n: i64) -> String {
        (self.today + chrono::Duration::days(n)).format("%Y-%m-%d").to_string()
    }

    /// `h` hours ago, RFC 3339.
    fn hours_ago(&self, h: i64) -> String {
        (Utc::now() - chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// The first and the last day of last month.
    fn last_month(&self) -> (String, String) {
        let end = self.today.with_day(1).unwrap_or(self.today) - chrono::Duration::days(1);
        let start = end.with_day(1).unwrap_or(end);
        (start.format("%Y-%m-%d").to_string(), end.format("%Y-%m-%d").to_string())
    }
}

/// One scene: a title, what it shows, and the records each member ingests in it.
#[derive(Debug)]
pub(super) struct Scene {
    pub(super) title: &'static str,
    pub(super) note: &'static str,
    pub(super) records: fn(&str, &Dates) -> Vec<Value>,
}

/// The scenes, in the order they are played.
pub(super) const SCENES: [Scene; 6] = [
    Scene {
        title: "IPR memorandum (2012): trademarks in the customs registers",
        note: "shared with every party; personal data of right holders and representatives withheld",
        records: marks,
    },
    Scene {
        title: "IPR memorandum (2012): counterfeit goods detained at the border",
        note: "summaries shared, relayable; declarants, carriers and drivers withheld",
        records: seizures,
    },
    Scene {
        title: "RMS memorandum (2013): risk management methods and seminars",
        note: "non-confidential knowledge only, as far as each member's policy shares it",
        records: rms,
    },
    Scene {
        title: "Energy protocol (Astana, 2008): electricity, oil and gas across the borders",
        note: "crossing point, type, volume and period shared; contract details withheld; never relayed",
        records: energy,
    },
    Scene {
        title: "RU–KZ bilateral agreement: smuggling and customs violation alerts",
        note: "between the two parties only, never relayed",
        records: alerts,
    },
    Scene {
        title: "Confidential: risk profiles, targeting rules and open cases",
        note: "confidential and secret records never leave their node, whatever a policy says",
        records: confidential,
    },
];

/// A record for the API.
fn rec(category: &str, classification: &str, body: Value) -> Value {
    json!({ "category": category, "classification": classification, "body": body })
}

/// A few words naming a record in the live view.
pub(super) fn label(r: &Value) -> String {
    let b = &r["body"];
    let s = |k: &str| b[k].as_str().unwrap_or("").to_owned();
    match r["category"].as_str().unwrap_or("") {
        "ipr.protected_mark" => {
            let classes: Vec<&str> =
                b["nice_classes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!("{} (Nice classes {})", s("mark_name"), classes.join(", "))
        }
        "ipr.infringement" => {
            format!(
                "{}: {} {} {} at {}",
                s("mark_name"),
                b["quantity"],
                s("unit"),
                s("hs_code"),
                s("customs_office")
            )
        }
        "energy.transfer" => {
            format!("{} {} {} at {}", s("energy_type"), s("volume"), s("unit"), s("crossing_point"))
        }
        "enforcement.alert" => format!("{}: {}", s("alert_kind"), s("summary")),
        _ => s("title"),
    }
}

/// IPR registers. TJ's policy does not share its register yet: its mark stays home.
fn marks(m: &str, _d: &Dates) -> Vec<Value> {
    let mark = |body: Value| rec("ipr.protected_mark", "public", body);
    match m {
        "CN" => vec![
            mark(json!({
                "register_number": "T2012-33871", "mark_name": "HUAWEI", "mark_kind": "word", "nice_classes": ["09"],
                "goods_description": "Mobile phones, network equipment and accessories",
                "protected_from": "2012-03-01", "protected_until": "2032-02-29", "status": "active",
                "right_holder_name": "Huawei Technologies Co., Ltd.", "right_holder_contact": "ip@huawei.example",
                "representative_name": "Wang Lei",
            })),
            mark(json!({
                "register_number": "T2011-20455", "mark_name": "LI-NING", "mark_kind": "combined", "nice_classes": ["25", "28"],
                "goods_description": "Sports footwear, apparel and equipment",
                "protected_from": "2011-07-15", "protected_until": "2031-07-14", "status": "active",
                "right_holder_name": "Li Ning (China) Sports Goods Co., Ltd.", "representative_name": "Chen Jing",
            })),
        ],
        "KG" => vec![mark(json!({
            "register_number": "KG-TM-0417", "mark_name": "ARASHAN", "mark_kind": "word", "nice_classes": ["32"],
            "goods_description": "Mineral and aerated waters",
            "protected_from": "2010-04-20", "protected_until": "2030-04-19", "status": "active",
            "right_holder_name": "Arashan LLC", "representative_name": "Asanov Nurlan",
        }))],
        "KZ" => vec![mark(json!({
            "register_number": "KZ-IPR-0089", "mark_name": "RAHAT", "mark_kind": "combined", "nice_classes": ["30"],
            "goods_description": "Chocolate and confectionery",
            "protected_from": "2009-11-02", "protected_until": "2029-11-01", "status": "active",
            "right_holder_name": "Rakhat JSC", "right_holder_contact": "ipr@rakhat.example",
        }))],
        "RU" => vec![
            mark(json!({
                "register_number": "ROIS-05011", "mark_name": "KALASHNIKOV", "mark_kind": "word", "nice_classes": ["13", "28"],
                "goods_description": "Sporting and hunting rifles, air guns, optical sights",
                "protected_from": "2012-09-10", "protected_until": "2027-09-09", "status": "active",
                "right_holder_name": "Kalashnikov Concern JSC", "right_holder_contact": "legal@kalashnikov.example",
                "representative_name": "Petrova Irina",
            })),
            mark(json!({
                "register_number": "ROIS-01245", "mark_name": "ALYONKA", "mark_kind": "combined", "nice_classes": ["30"],
                "goods_description": "Milk chocolate and confectionery",
                "protected_from": "2008-05-30", "protected_until": "2028-05-29", "status": "active",
                "right_holder_name": "Krasny Oktyabr Confectionery Factory", "representative_name": "Smirnov Pavel",
            })),
        ],
        "TJ" => vec![mark(json!({
            "register_number": "TJ-TM-0031", "mark_name": "TALCO", "mark_kind": "word", "nice_classes": ["06"],
            "goods_description": "Primary aluminium, ingots and wire rod",
            "protected_from": "2011-02-14", "status": "active",
            "right_holder_name": "Tajik Aluminium Company",
        }))],
        "UZ" => vec![mark(json!({
            "register_number": "UZ-MGU-0512", "mark_name": "SAMARQAND", "mark_kind": "combined", "nice_classes": ["24", "27"],
            "goods_description": "Silk fabrics and hand-knotted carpets",
            "protected_from": "2010-09-01", "protected_until": "2030-08-31", "status": "active",
            "right_holder_name": "Samarkand Silk Carpets LLC", "representative_name": "Yusupova Dilnoza",
        }))],
        _ => Vec::new(),
    }
}

/// Seizure summaries. TJ also withholds the estimated value (its policy's extra redaction).
fn seizures(m: &str, d: &Dates) -> Vec<Value> {
    let seizure = |body: Value| rec("ipr.infringement", "non_confidential", body);
    match m {
        "CN" => vec![seizure(json!({
            "detained_on": d.ago(4), "customs_office": "Khorgos customs, Xinjiang", "mark_name": "ADIDAS",
            "goods_description": "Sports footwear bearing a counterfeit three-stripe mark", "hs_code": "6404.11",
            "quantity": 4800, "unit": "pairs", "estimated_value_usd": "96000.00", "country_of_origin": "CN",
            "route": ["CN", "KZ"], "outcome": "seized",
            "declarant_name": "Ili Silk Road Trading Co., Ltd.", "declarant_id": "91654004MA78XK2Q4D",
            "carrier_name": "Tianshan Cross-Border Logistics", "driver_name": "Ma Jun",
        }))],
        "KG" => vec![seizure(json!({
            "detained_on": d.ago(6), "customs_office": "Torugart customs post", "mark_name": "NIKE",
            "goods_description": "T-shirts and hooded sweatshirts", "hs_code": "6109.10",
            "quantity": 12000, "unit": "pieces", "estimated_value_usd": "54000.00", "country_of_origin": "CN",
            "route": ["CN", "KG"], "outcome": "destroyed",
            "declarant_name": "Dordoi Textile Trade LLC", "declarant_id": "02104201110123", "driver_name": "Toktogulov Aibek",
        }))],
        "KZ" => vec![seizure(json!({
            "detained_on": d.ago(3), "customs_office": "Dostyk customs post", "mark_name": "CHANEL",
            "goods_description": "Perfume, 100 ml bottles, in imitation packaging", "hs_code": "3303.00",
            "quantity": 2400, "unit": "pieces", "estimated_value_usd": "31200.00", "country_of_origin": "CN",
            "route": ["CN", "KZ"], "outcome": "seized",
            "declarant_name": "Almaty Beauty Import LLP", "declarant_id": "140340012345", "driver_name": "Nurlanov Yerlan",
        }))],
        "RU" => vec![
            seizure(json!({
                "detained_on": d.ago(2), "customs_office": "Zabaykalsk customs post", "mark_name": "DURACELL",
                "goods_description": "Alkaline batteries, size AA", "hs_code": "8506.10",
                "quantity": 36000, "unit": "pieces", "estimated_value_usd": "14400.00", "country_of_origin": "CN",
                "route": ["CN", "RU"], "outcome": "destroyed",
                "declarant_name": "Chita Trade House LLC", "declarant_id": "7536012345",
                "carrier_name": "Transsib Logistic LLC", "driver_name": "Ivanov Sergei",
            })),
            seizure(json!({
                "detained_on": d.ago(5), "customs_office": "Troitsk customs post", "mark_name": "ALYONKA",
                "mark_register_number": "ROIS-01245", "goods_description": "Chocolate bars in look-alike wrappers",
                "hs_code": "1806.32", "quantity": 1900, "unit": "kg", "estimated_value_usd": "7600.00",
                "country_of_origin": "CN", "route": ["CN", "KZ", "RU"], "outcome": "seized",
                "declarant_name": "Ural Sweets LLC", "declarant_id": "7424098765", "driver_name": "Bekov Ruslan",
            })),
        ],
        "TJ" => vec![seizure(json!({
            "detained_on": d.ago(7), "customs_office": "Kulma customs post, Murghab", "mark_name": "HEAD & SHOULDERS",
            "goods_description": "Shampoo, 400 ml bottles", "hs_code": "3305.10",
            "quantity": 8400, "unit": "pieces", "estimated_value_usd": "12600.00", "country_of_origin": "CN",
            "route": ["CN", "TJ"], "outcome": "seized",
            "declarant_name": "Pamir Goods LLC", "carrier_name": "Khorog Auto LLC", "driver_name": "Davlatov Sherali",
        }))],
        "UZ" => vec![seizure(json!({
            "detained_on": d.ago(1), "customs_office": "Yallama customs post", "mark_name": "BOSCH",
            "goods_description": "Spark plugs for passenger cars", "hs_code": "8511.10",
            "quantity": 5000, "unit": "pieces", "estimated_value_usd": "17500.00", "country_of_origin": "CN",
            "route": ["CN", "KZ", "UZ"], "outcome": "under_investigation",
            "declarant_name": "Tashkent Auto Parts LLC", "declarant_id": "305123456", "driver_name": "Karimov Botir",
        }))],
        _ => Vec::new(),
    }
}

/// RMS. KG shares seminars only and TJ no RMS at all (their methods and courses stay
/// home); RU shares only public method descriptions (its non-confidential one stays home);
/// the Secretariat (XS, when started) announces a conference.
fn rms(m: &str, d: &Dates) -> Vec<Value> {
    let method = |class: &str, body: Value| rec("rms.method", class, body);
    let event = |body: Value| rec("rms.event", "public", body);
    match m {
        "CN" => vec![
            method(
                "public",
                json!({
                    "title": "Container X-ray image analysis with a shared reference library", "method_type": "it_system",
                    "summary": "Scanner images are compared with a library of reference images of correctly declared goods; deviations are flagged for the inspector.",
                    "customs_procedures": ["import", "transit"], "in_use_since": "2010-06-01",
                    "contact_unit": "GACC Risk Management Department", "author_name": "Li Ming",
                }),
            ),
            event(json!({
                "title": "Seminar: risk management for cross-border e-commerce parcels", "event_kind": "seminar",
                "starts_on": d.ahead(40), "ends_on": d.ahead(42), "location": "Urumqi", "host": "CN",
                "languages": ["zh", "ru", "en"], "places": 60, "organiser_contact": "Zhao Hui, +86 991 000 0000",
            })),
        ],
        "KG" => vec![
            method(
                "non_confidential",
                json!({
                    "title": "Pre-arrival information for road transport at Torugart", "method_type": "it_system",
                    "summary": "Carriers lodge electronic pre-arrival data two hours before the border; the system assigns the lane.",
                    "customs_procedures": ["import", "transit"], "in_use_since": "2012-01-15",
                    "contact_unit": "State Customs Service, IT department", "author_name": "Omurbekov Talant",
                }),
            ),
            event(json!({
                "title": "Training: post-clearance audit for SCO customs officers", "event_kind": "training",
                "starts_on": d.ahead(25), "ends_on": d.ahead(29), "location": "Bishkek", "host": "KG",
                "languages": ["ru", "en"], "places": 30, "organiser_contact": "Sydykova Ainura",
            })),
        ],
        "KZ" => vec![
            method(
                "public",
                json!({
                    "title": "Electronic seals on transit containers, Khorgos–Aktau corridor", "method_type": "it_system",
                    "summary": "GPS seals report position and opening; a deviation from the route raises an alert at the next post.",
                    "customs_procedures": ["transit"], "in_use_since": "2012-09-01",
                    "contact_unit": "State Revenue Committee, transit control unit", "author_name": "Abenov Marat",
                }),
            ),
            event(json!({
                "title": "Working group on risk management systems", "event_kind": "working_group",
                "starts_on": d.ahead(60), "ends_on": d.ahead(61), "location": "Astana", "host": "KZ",
                "languages": ["ru", "zh"], "places": 24, "organiser_contact": "Iskakova Dana",
            })),
        ],
        "RU" => vec![
            method(
                "public",
                json!({
                    "title": "Automated selectivity by route and consignor history", "method_type": "selectivity",
                    "summary": "Declarations are scored on the route, the consignor's history and the declared value against the mirror value; high scores go to the red channel.",
                    "customs_procedures": ["import", "export"], "in_use_since": "2011-03-01",
                    "contact_unit": "FCS Main Directorate of Risk Management", "author_name": "Volkov Dmitry",
                }),
            ),
            method(
                "non_confidential",
                json!({
                    "title": "Selecting post-clearance audits from mirror statistics", "method_type": "post_clearance_audit",
                    "summary": "Importers whose declared values diverge from partner-country export statistics are chosen for audit.",
                    "customs_procedures": ["import"], "in_use_since": "2012-02-01",
                    "contact_unit": "FCS Post-Clearance Audit Directorate", "author_name": "Orlova Natalia",
                }),
            ),
            event(json!({
                "title": "SCO conference on customs risk management", "event_kind": "conference",
                "starts_on": d.ahead(90), "ends_on": d.ahead(92), "location": "Moscow", "host": "RU",
                "languages": ["ru", "zh", "en"], "places": 120, "organiser_contact": "Sokolov Alexei, +7 495 000 00 00",
            })),
        ],
        "TJ" => vec![event(json!({
            "title": "Course: interpretation of X-ray images", "event_kind": "training",
            "starts_on": d.ahead(45), "ends_on": d.ahead(49), "location": "Dushanbe", "host": "TJ",
            "languages": ["ru", "tg"], "places": 20, "organiser_contact": "Nazarov Jamshed",
        }))],
        "UZ" => vec![method(
            "non_confidential",
            json!({
                "title": "Risk-based green channel for passengers at Tashkent airport", "method_type": "selectivity",
                "summary": "Passengers are routed to the green or the red channel from advance passenger information and past findings.",
                "customs_procedures": ["passengers"], "in_use_since": "2012-06-01",
                "contact_unit": "State Customs Committee, passenger control department", "author_name": "Rakhimov Jasur",
            }),
        )],
        "XS" => vec![event(json!({
            "title": "Meeting of the heads of SCO customs services: panel on risk management", "event_kind": "conference",
            "starts_on": d.ahead(120), "ends_on": d.ahead(121), "location": "Beijing", "host": "XS",
            "languages": ["zh", "ru"], "places": 40, "organiser_contact": "SCO Secretariat protocol office",
        }))],
        _ => Vec::new(),
    }
}

/// Energy movements of last month. RU pauses TJ (pending reconciliation); KG sends to its
/// grid neighbours only (not RU); UZ shares only non-confidential records (its public one
/// stays home).
fn energy(m: &str, d: &Dates) -> Vec<Value> {
    let (start, end) = d.last_month();
    let reported = d.hours_ago(20);
    let transfer = |class: &str, mut body: Value| {
        body["period_start"] = json!(start);
        body["period_end"] = json!(end);
        body["reported_at"] = json!(reported);
        rec("energy.transfer", class, body)
    };
    let nc = "non_confidential";
    match m {
        "CN" => vec![transfer(
            nc,
            json!({
                "crossing_point": "Mohe", "direction": "import", "energy_type": "crude_oil", "volume": "1250000", "unit": "tonnes",
                "line_or_pipeline": "Skovorodino–Mohe branch of the ESPO pipeline", "country_from": "RU", "country_to": "CN",
                "contract_reference": "CNPC-RN-2009/ESPO-02", "contract_price": "612.40", "counterparty": "Rosneft Oil Company",
            }),
        )],
        "KG" => vec![transfer(
            nc,
            json!({
                "crossing_point": "Kordai substation", "direction": "export", "energy_type": "electricity", "volume": "185000", "unit": "mwh",
                "line_or_pipeline": "Frunze–Almaty 500 kV line", "country_from": "KG", "country_to": "KZ",
                "contract_reference": "NESK-KEGOC-2013/07", "contract_price": "21.50", "counterparty": "KEGOC JSC",
            }),
        )],
        "KZ" => vec![transfer(
            nc,
            json!({
                "crossing_point": "Alashankou", "direction": "export", "energy_type": "crude_oil", "volume": "980000", "unit": "tonnes",
                "line_or_pipeline": "Atasu–Alashankou pipeline", "country_from": "KZ", "country_to": "CN",
                "contract_reference": "KCP-2013/114", "contract_price": "598.10", "counterparty": "PetroChina International",
            }),
        )],
        "RU" => vec![
            transfer(
                nc,
                json!({
                    "crossing_point": "Blagoveshchensk–Heihe", "direction": "export", "energy_type": "electricity", "volume": "310000", "unit": "mwh",
                    "line_or_pipeline": "Amurskaya–Heihe 500 kV line", "country_from": "RU", "country_to": "CN",
                    "contract_reference": "IRAO-SGCC-2012/01", "contract_price": "48.30", "counterparty": "State Grid Corporation of China",
                }),
            ),
            transfer(
                nc,
                json!({
                    "crossing_point": "Omsk–Pavlodar border point", "direction": "export", "energy_type": "crude_oil", "volume": "650000", "unit": "tonnes",
                    "line_or_pipeline": "Omsk–Pavlodar pipeline", "country_from": "RU", "country_to": "KZ",
                    "contract_reference": "TN-KMG-2013/22", "contract_price": "540.00", "counterparty": "KazMunayGas",
                }),
            ),
        ],
        "TJ" => vec![transfer(
            nc,
            json!({
                "crossing_point": "Regar–Guzar border point", "direction": "export", "energy_type": "electricity", "volume": "95000", "unit": "mwh",
                "line_or_pipeline": "Regar–Guzar 500 kV line", "country_from": "TJ", "country_to": "UZ",
                "contract_reference": "BT-UE-2013/03", "contract_price": "19.80", "counterparty": "Uzbekenergo",
            }),
        )],
        "UZ" => vec![
            transfer(
                nc,
                json!({
                    "crossing_point": "Gazli", "direction": "transit", "energy_type": "natural_gas", "volume": "2100000", "unit": "thousand_cubic_metres",
                    "line_or_pipeline": "Central Asia–China gas pipeline, lines A and B", "country_from": "TM", "country_to": "CN",
                    "contract_reference": "UTG-AGP-2013/09", "counterparty": "Asia Trans Gas",
                }),
            ),
            transfer(
                "public",
                json!({
                    "crossing_point": "Syrdarya–Shymkent border point", "direction": "export", "energy_type": "electricity", "volume": "120000", "unit": "mwh",
                    "line_or_pipeline": "Syrdarya TPP–Shymkent 500 kV line", "country_from": "UZ", "country_to": "KZ",
                    "contract_reference": "UE-KEGOC-2013/02", "contract_price": "23.00", "counterparty": "KEGOC JSC",
                }),
            ),
        ],
        _ => Vec::new(),
    }
}

/// RU–KZ alerts: the agreement redacts nothing between its two parties; KZ's policy
/// withholds identity document numbers on top.
fn alerts(m: &str, d: &Dates) -> Vec<Value> {
    let alert = |body: Value| rec("enforcement.alert", "non_confidential", body);
    match m {
        "RU" => vec![
            alert(json!({
                "alert_kind": "undervaluation", "risk_level": "high",
                "summary": "Women's and men's suits declared in transit to Kazakhstan at 70% below the mirror value",
                "detected_at": d.hours_ago(30), "customs_office": "Troitsk customs post", "case_number": "10504000/13/0012",
                "hs_codes": ["6204.62", "6203.42"], "route": ["CN", "RU", "KZ"],
                "vehicle_plate": "A123BC 74", "suspect_name": "Kuznetsov Andrei", "suspect_document": "7512 345678",
            })),
            alert(json!({
                "alert_kind": "drugs", "risk_level": "high",
                "summary": "Heroin concealed in a consignment of dried apricots",
                "detected_at": d.hours_ago(9), "customs_office": "Orenburg customs", "case_number": "10409000/13/0147",
                "hs_codes": ["0813.10"], "route": ["TJ", "UZ", "KZ", "RU"],
                "vehicle_plate": "01 456 KAA", "suspect_name": "Rakhmonov Umed", "suspect_document": "400123456",
            })),
        ],
        "KZ" => vec![alert(json!({
            "alert_kind": "smuggling", "risk_level": "medium",
            "summary": "Cigarettes concealed behind a false wall of a refrigerated trailer",
            "detected_at": d.hours_ago(14), "customs_office": "Zhana Zhol customs post", "case_number": "KZ-55-2013-0321",
            "hs_codes": ["2402.20"], "route": ["KZ", "RU"],
            "vehicle_plate": "123 ABC 15", "suspect_name": "Suleimenov Daulet", "suspect_document": "N12345678",
        }))],
        _ => Vec::new(),
    }
}

/// Confidential and secret records, of categories that would otherwise be shared.
fn confidential(m: &str, d: &Dates) -> Vec<Value> {
    let c = "confidential";
    match m {
        "CN" => vec![rec(
            "rms.method",
            c,
            json!({
                "title": "Risk profile: consumer electronics declared from free zones", "method_type": "selectivity",
                "summary": "Indicators: declared unit value under 40% of the reference price; consignee registered less than 6 months ago; transshipment in a free zone.",
                "contact_unit": "GACC Risk Management Department",
            }),
        )],
        "KG" => vec![rec(
            "ipr.infringement",
            c,
            json!({
                "detained_on": d.ago(1), "customs_office": "Ak-Zhol customs post", "mark_name": "SAMSUNG",
                "goods_description": "Mobile phone batteries; the investigation is open", "hs_code": "8507.60",
                "quantity": 3000, "unit": "pieces", "outcome": "under_investigation", "declarant_name": "Bishkek Mobile LLC",
            }),
        )],
        "KZ" => vec![rec(
            "enforcement.alert",
            c,
            json!({
                "alert_kind": "smuggling", "risk_level": "high",
                "summary": "Controlled delivery in progress: no action before the consignment reaches Petropavlovsk",
                "detected_at": d.hours_ago(3), "customs_office": "Zhana Zhol customs post", "case_number": "KZ-55-2013-0330",
                "vehicle_plate": "456 DEF 15",
            }),
        )],
        "RU" => vec![
            rec(
                "rms.method",
                c,
                json!({
                    "title": "Targeting rules for undervalued textiles, HS chapters 61 and 62", "method_type": "selectivity",
                    "summary": "Thresholds per HS subheading and route; consignors on the watch list; rules reviewed monthly.",
                    "contact_unit": "FCS Main Directorate of Risk Management",
                }),
            ),
            rec(
                "enforcement.alert",
                "secret",
                json!({
                    "alert_kind": "weapons", "risk_level": "high",
                    "summary": "Informant report: rifle parts expected in a machinery consignment",
                    "detected_at": d.hours_ago(2), "customs_office": "Orenburg customs", "hs_codes": ["9305.20"],
                }),
            ),
        ],
        "TJ" => vec![rec(
            "ipr.infringement",
            c,
            json!({
                "detained_on": d.ago(2), "customs_office": "Panji Poyon customs post", "mark_name": "NIVEA",
                "goods_description": "Skin cream; the investigation is open", "hs_code": "3304.99",
                "quantity": 6000, "unit": "pieces", "outcome": "under_investigation",
            }),
        )],
        "UZ" => vec![rec(
            "energy.transfer",
            c,
            json!({
                "period_start": d.ago(10), "period_end": d.ago(1), "crossing_point": "Gazli", "direction": "transit",
                "energy_type": "natural_gas", "volume": "64000", "unit": "thousand_cubic_metres",
                "reported_at": d.hours_ago(4), "contract_reference": "UTG-AGP-2013/09-A (under negotiation)",
            }),
        )],
        "XS" => vec![rec(
            "rms.event",
            c,
            json!({
                "title": "Closed session: draft multilateral agreement on customs violations", "event_kind": "working_group",
                "starts_on": d.ahead(30), "location": "Beijing", "host": "XS",
            }),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tamga_config::Federation;

    /// Every scene's records pass the example catalog's checks, for every member.
    #[test]
    fn every_record_is_valid_for_the_catalog() {
        let dir = tempfile::tempdir().expect("a temp dir");
        crate::example::write_to(dir.path()).expect("writes");
        let fed = Federation::load_files(
            &dir.path().join("roster.toml"),
            &dir.path().join("catalog.toml"),
            &dir.path().join("agreements"),
            &dir.path().join("policies/RU.toml"),
            "RU".parse().expect("valid"),
        )
        .expect("the example federation loads");
        let d = Dates::now();
        let mut n = 0;
        for m in crate::localfed::EXAMPLE_MEMBERS {
            for s in &SCENES {
                for r in (s.records)(m, &d) {
                    let category = r["category"].as_str().expect("category").parse().expect("valid");
                    let body = r["body"].as_object().expect("an object").clone();
                    if let Err(e) = fed.catalog.validate_body(&category, &body) {
                        panic!("{m} {category}: {e:?}");
                    }
                    assert!(!label(&r).is_empty());
                    n += 1;
                }
            }
        }
        assert!(n > 40, "{n} records");
    }
}
