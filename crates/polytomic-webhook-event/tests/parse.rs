//! Parsing and validation through the plain `parse` functions: values, paths and codes.
#![allow(clippy::unwrap_used)] // Tests and their helpers panic on unexpected outcomes by design.

mod common;

use axum_core::response::IntoResponse;
use chrono::{DateTime, TimeZone, Utc};
use common::{SAMPLE, SYNC_ID, answer, envelope};
use polytomic_webhook_event::rejection::EventRejection;
use polytomic_webhook_event::{
    EventConfig, Fields, PolytomicEvent, RawFields, Record, SyncRecords, parse, parse_sync_records,
    slow_path_runs, tracked_parses,
};
use serde_json::json;

#[derive(Debug, PartialEq, serde::Deserialize)]
struct User {
    email: String,
    last_login: DateTime<Utc>,
}

fn config() -> EventConfig {
    EventConfig::default()
}

fn reject<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    body: &str,
    config: &EventConfig,
) -> EventRejection {
    parse_sync_records::<T>(body.as_bytes(), config).unwrap_err()
}

/// Asserts the rejection's status, code and `path`, through the rendered response.
async fn assert_rejects<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    body: &str,
    config: &EventConfig,
    status: u16,
    code: &str,
    path: Option<&str>,
) -> common::Answer {
    let rejection = reject::<T>(body, config);
    assert_eq!(rejection.status(), status, "{rejection}");
    assert_eq!(rejection.code(), code, "{rejection}");
    let reply = answer(rejection.into_response()).await;
    reply.assert_problem(status, code);
    if let Some(path) = path {
        assert_eq!(reply.path(), path, "{}", reply.body);
    }
    reply
}

#[test]
fn sample_parses_into_dynamic_fields() {
    let batch: SyncRecords = parse_sync_records(SAMPLE.as_bytes(), &config()).unwrap();
    assert_eq!(batch.id().as_str(), SYNC_ID);
    assert_eq!(batch.name(), "Webhook HTTP Endpoint sync");
    assert_eq!(batch.len(), 1);
    assert!(batch.metadata().is_empty());
    let record = &batch.records()[0];
    assert_eq!(record.hash().as_str(), "b7421c6c57bd49f7");
    assert_eq!(
        record
            .fields()
            .deserialize_as::<serde_json::Value>()
            .unwrap(),
        json!({"email": "nathan@polytomic.com", "last_login": "2020-12-02T00:00:00Z"})
    );
}

#[test]
fn sample_parses_into_typed_fields() {
    let batch: SyncRecords<User> = parse_sync_records(SAMPLE.as_bytes(), &config()).unwrap();
    let users: Vec<User> = batch.into_iter().map(Record::into_fields).collect();
    assert_eq!(
        users,
        [User {
            email: "nathan@polytomic.com".into(),
            last_login: Utc.with_ymd_and_hms(2020, 12, 2, 0, 0, 0).unwrap(),
        }]
    );
}

#[test]
fn valid_input_never_takes_the_slow_path() {
    let (slow, tracked) = (slow_path_runs(), tracked_parses());
    for _ in 0..3 {
        parse_sync_records::<User>(SAMPLE.as_bytes(), &config()).unwrap();
        parse_sync_records::<Fields>(SAMPLE.as_bytes(), &config().normalize_field_names(true))
            .unwrap();
        parse::<Fields>(br#"{"event":"sync.other","object":{"a":1}}"#, &config()).unwrap();
    }
    assert_eq!(slow_path_runs(), slow);
    assert_eq!(tracked_parses(), tracked);

    // The hooks do count: a record `T` refuses takes the slow path once, with path tracking.
    reject::<User>(
        &envelope(r#"[{"hash":"h","fields":{"email":1}}]"#),
        &config(),
    );
    assert_eq!(slow_path_runs(), slow + 1);
    assert_eq!(tracked_parses(), tracked + 1);
    // An envelope error is located without re-running `T` under tracking.
    reject::<User>(&envelope(r#"[{"hash":5}]"#), &config());
    assert_eq!(slow_path_runs(), slow + 2);
    assert_eq!(tracked_parses(), tracked + 1);
}

#[tokio::test]
async fn malformed_json_is_400_with_position() {
    for body in [
        "",
        "{",
        "{\"event\": }",
        "not json",
        &format!("{SAMPLE} trailing"),
        &"[".repeat(1000),
        &SAMPLE[..SAMPLE.len() - 3],
    ] {
        let reply = assert_rejects::<Fields>(body, &config(), 400, "invalid_json", None).await;
        assert!(reply.detail().contains("line"), "{}", reply.detail());
        assert!(reply.body["line"].as_u64().unwrap() >= 1);
        assert!(reply.body["column"].is_u64());
    }
    // Invalid UTF-8 inside a string.
    let mut bytes = envelope(r#"[{"hash":"h","fields":{"name":"XX"}}]"#).into_bytes();
    let at = bytes.windows(2).position(|w| w == b"XX").unwrap();
    bytes[at] = 0xff;
    let rejection = parse_sync_records::<Fields>(&bytes, &config()).unwrap_err();
    assert_eq!(rejection.code(), "invalid_json");
    assert_eq!(rejection.status(), 400);
}

#[tokio::test]
async fn syntax_errors_win_over_earlier_data_errors() {
    // `event` has the wrong type, but the body is not even JSON further on.
    let body = r#"{"event": 5, "object": {"#;
    assert_rejects::<Fields>(body, &config(), 400, "invalid_json", None).await;
}

#[tokio::test]
async fn envelope_errors_are_422_with_path() {
    let records = |r: &str| envelope(r);
    let three_ok = r#"{"hash":"a","fields":{}},{"hash":"b","fields":{}},{"hash":"c","fields":{}}"#;
    let cases: Vec<(String, &str)> = vec![
        ("[]".into(), ""),
        ("5".into(), ""),
        (r#"{"object":{}}"#.into(), ""),
        (r#"{"event":"sync.records"}"#.into(), ""),
        (r#"{"event":5,"object":{}}"#.into(), "event"),
        (
            r#"{"event":"sync.records","event":"x","object":{}}"#.into(),
            "",
        ),
        (r#"{"event":"sync.records","object":[]}"#.into(), "object"),
        (
            format!(r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n"}}}}"#),
            "object",
        ),
        (
            format!(r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","records":[]}}}}"#),
            "object",
        ),
        (
            r#"{"event":"sync.records","object":{"id":"nope","name":"n","records":[]}}"#.into(),
            "object.id",
        ),
        (
            r#"{"event":"sync.records","object":{"id":7,"name":"n","records":[]}}"#.into(),
            "object.id",
        ),
        (
            format!(
                r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":{{}}}}}}"#
            ),
            "object.records",
        ),
        (
            format!(
                r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"metadata":"x"}}}}"#
            ),
            "object.metadata",
        ),
        (
            format!(
                r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"metadata":[1]}}}}"#
            ),
            "object.metadata",
        ),
        (
            records(&format!(r#"[{three_ok},{{"fields":{{}}}}]"#)),
            "object.records[3]",
        ),
        (
            records(&format!(r#"[{three_ok},{{"hash":5,"fields":{{}}}}]"#)),
            "object.records[3].hash",
        ),
        (records(r#"[{"hash":"a"}]"#), "object.records[0]"),
        (
            records(r#"[{"hash":"a","fields":"x"}]"#),
            "object.records[0].fields",
        ),
        (
            records(r#"[{"hash":"a","fields":[1]}]"#),
            "object.records[0].fields",
        ),
        (
            records(r#"[{"hash":"a","fields":null}]"#),
            "object.records[0].fields",
        ),
        (records("[7]"), "object.records[0]"),
    ];
    for (body, path) in cases {
        let reply =
            assert_rejects::<Fields>(&body, &config(), 422, "invalid_envelope", Some(path)).await;
        assert!(!reply.detail().is_empty());
    }
}

#[tokio::test]
async fn non_object_fields_are_envelope_errors_whatever_t_accepts() {
    // `String` and `Value` would accept a string, but `fields` must be an object.
    let body = envelope(r#"[{"hash":"a","fields":"x"}]"#);
    assert_rejects::<String>(
        &body,
        &config(),
        422,
        "invalid_envelope",
        Some("object.records[0].fields"),
    )
    .await;
    assert_rejects::<serde_json::Value>(
        &body,
        &config(),
        422,
        "invalid_envelope",
        Some("object.records[0].fields"),
    )
    .await;
    assert_rejects::<Option<Fields>>(
        &envelope(r#"[{"hash":"a","fields":null}]"#),
        &config(),
        422,
        "invalid_envelope",
        Some("object.records[0].fields"),
    )
    .await;
    // A `fields` object, on the other hand, is handed to such a `T`.
    parse_sync_records::<serde_json::Value>(
        envelope(r#"[{"hash":"a","fields":{}}]"#).as_bytes(),
        &config(),
    )
    .unwrap();
    parse_sync_records::<Option<Fields>>(
        envelope(r#"[{"hash":"a","fields":{"a":1}}]"#).as_bytes(),
        &config(),
    )
    .unwrap();
}

#[tokio::test]
async fn record_field_errors_are_422_with_path_inside_fields() {
    let ok = r#"{"hash":"a","fields":{"email":"a@b.c","last_login":"2020-12-02T00:00:00Z"}}"#;
    let body = envelope(&format!(
        r#"[{ok},{ok},{ok},{{"hash":"d","fields":{{"email":5,"last_login":"2020-12-02T00:00:00Z"}}}}]"#
    ));
    let reply = assert_rejects::<User>(
        &body,
        &config(),
        422,
        "invalid_record_fields",
        Some("object.records[3].fields.email"),
    )
    .await;
    assert!(
        reply.detail().contains("invalid type"),
        "{}",
        reply.detail()
    );

    let body = envelope(r#"[{"hash":"d","fields":{"email":"x","last_login":"yesterday"}}]"#);
    assert_rejects::<User>(
        &body,
        &config(),
        422,
        "invalid_record_fields",
        Some("object.records[0].fields.last_login"),
    )
    .await;

    let body = envelope(r#"[{"hash":"d","fields":{"email":"x"}}]"#);
    let reply = assert_rejects::<User>(
        &body,
        &config(),
        422,
        "invalid_record_fields",
        Some("object.records[0].fields"),
    )
    .await;
    assert!(reply.detail().contains("last_login"), "{}", reply.detail());

    // Nested paths inside fields, and through normalisation too.
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Tags {
        tags: Vec<u8>,
    }
    let body = envelope(r#"[{"hash":"d","fields":{"tags":[1,"x"]}}]"#);
    assert_rejects::<Tags>(
        &body,
        &config(),
        422,
        "invalid_record_fields",
        Some("object.records[0].fields.tags[1]"),
    )
    .await;
    let body = envelope(r#"[{"hash":"d","fields":{"$tags":[1,"x"]}}]"#);
    assert_rejects::<Tags>(
        &body,
        &config().normalize_field_names(true),
        422,
        "invalid_record_fields",
        Some("object.records[0].fields.tags[1]"),
    )
    .await;
}

#[tokio::test]
async fn too_many_records_is_413_and_found_while_parsing() {
    let record = r#"{"hash":"a","fields":{}}"#;
    let three = envelope(&format!("[{record},{record},{record}]"));
    assert_rejects::<Fields>(
        &three,
        &config().max_records(2),
        413,
        "too_many_records",
        Some("object.records"),
    )
    .await;
    assert_eq!(
        parse_sync_records::<Fields>(three.as_bytes(), &config().max_records(3))
            .unwrap()
            .len(),
        3
    );

    // Found before the rest of the body is looked at: a batch that is also malformed after the
    // limit is still refused as too large.
    let truncated = format!(
        r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[{record},{record},{record},"#
    );
    assert_rejects::<Fields>(
        &truncated,
        &config().max_records(2),
        413,
        "too_many_records",
        None,
    )
    .await;
}

#[test]
fn extra_keys_are_ignored_at_every_level() {
    let body = format!(
        r#"{{"version":2,"event":"sync.records","delivery":{{"attempt":1}},"object":{{
            "id":"{SYNC_ID}","name":"n","mode":"updateOrCreate","records":[
                {{"hash":"h","fields":{{"email":"a@b.c","last_login":"2020-12-02T00:00:00Z","extra":[1]}},"op":"upsert"}}
            ],"metadata":{{"team":"growth"}},"future":null}},"trailer":[]}}"#
    );
    let batch: SyncRecords<User> = parse_sync_records(body.as_bytes(), &config()).unwrap();
    assert_eq!(batch.records()[0].fields().email, "a@b.c");
    assert_eq!(batch.metadata().get("team").unwrap().get(), r#""growth""#);
}

#[test]
fn metadata_null_or_absent_is_empty() {
    for metadata in [r#","metadata":null"#, ""] {
        let body = format!(
            r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[]{metadata}}}}}"#
        );
        let batch: SyncRecords = parse_sync_records(body.as_bytes(), &config()).unwrap();
        assert!(batch.metadata().is_empty());
    }
}

#[test]
fn object_may_come_before_event() {
    let body = format!(
        r#"{{"object":{{"id":"{SYNC_ID}","name":"n","records":[{{"hash":"h","fields":{{"a":1}}}}]}},"event":"sync.records"}}"#
    );
    let batch: SyncRecords<Fields> = parse_sync_records(body.as_bytes(), &config()).unwrap();
    assert_eq!(batch.records()[0].fields()["a"], 1);
    let batch: SyncRecords = parse_sync_records(body.as_bytes(), &config()).unwrap();
    assert_eq!(batch.records()[0].fields().as_str(), r#"{"a":1}"#);

    let bad = format!(
        r#"{{"object":{{"id":"{SYNC_ID}","name":"n","records":[{{"hash":"h","fields":{{}}}},{{"fields":{{}}}}]}},"event":"sync.records"}}"#
    );
    let EventRejection::InvalidEnvelope(error) = reject::<Fields>(&bad, &config()) else {
        panic!("expected an envelope error")
    };
    assert_eq!(error.path(), "object.records[1]");
}

#[test]
fn sync_id_check_can_be_relaxed() {
    let body = r#"{"event":"sync.records","object":{"id":"sync-42","name":"n","records":[]}}"#;
    assert_eq!(reject::<Fields>(body, &config()).code(), "invalid_envelope");
    let relaxed = config().require_uuid_sync_id(false);
    let batch: SyncRecords = parse_sync_records(body.as_bytes(), &relaxed).unwrap();
    assert_eq!(batch.id().as_str(), "sync-42");
    let empty = r#"{"event":"sync.records","object":{"id":"","name":"n","records":[]}}"#;
    assert_eq!(reject::<Fields>(empty, &relaxed).code(), "invalid_envelope");
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Person {
    first_name: String,
}

#[tokio::test]
async fn normalisation_is_opt_in() {
    let body = envelope(r#"[{"hash":"h","fields":{"$first_name":"Ada"}}]"#);
    // Off by default: the name arrives as sent.
    let batch: SyncRecords = parse_sync_records(body.as_bytes(), &config()).unwrap();
    assert!(batch.records()[0].fields().get("$first_name").is_some());
    assert_eq!(
        reject::<Person>(&body, &config()).code(),
        "invalid_record_fields"
    );

    // On: `$first_name` becomes `first_name` before `T` sees it.
    let on = config().normalize_field_names(true);
    let batch: SyncRecords<Person> = parse_sync_records(body.as_bytes(), &on).unwrap();
    assert_eq!(batch.records()[0].fields().first_name, "Ada");
    let batch: SyncRecords<Fields> = parse_sync_records(body.as_bytes(), &on).unwrap();
    assert_eq!(batch.records()[0].fields()["first_name"], "Ada");
    let batch: SyncRecords = parse_sync_records(body.as_bytes(), &on).unwrap();
    assert_eq!(
        batch.records()[0].fields().as_str(),
        r#"{"first_name":"Ada"}"#
    );

    // Two names that normalise alike are refused, naming both.
    let body = envelope(
        r#"[{"hash":"h","fields":{"first_name":"Cy"}},{"hash":"h","fields":{"$first_name":"Ada","first_name":"Bea"}}]"#,
    );
    let reply = assert_rejects::<Person>(
        &body,
        &on,
        422,
        "field_name_collision",
        Some("object.records[1].fields"),
    )
    .await;
    let detail = reply.detail();
    assert!(
        detail.contains("`$first_name`") && detail.contains("`first_name`"),
        "{detail}"
    );
    let mut named: Vec<_> = reply.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    named.sort();
    assert_eq!(named, ["$first_name", "first_name"]);
}

#[test]
fn unknown_events_parse_as_unknown() {
    let event = parse::<Fields>(
        br#"{"event":"sync.future_thing","object":{"x":1}}"#,
        &config(),
    )
    .unwrap();
    assert_eq!(event.event_name(), "sync.future_thing");
    assert!(
        matches!(event, PolytomicEvent::Unknown { ref object, .. } if object.as_str() == r#"{"x":1}"#)
    );
    // The `object` is still required.
    assert_eq!(
        parse::<Fields>(br#"{"event":"sync.future_thing"}"#, &config())
            .unwrap_err()
            .code(),
        "invalid_envelope"
    );
}

#[test]
fn serialized_shape_matches_the_delivery_object() {
    let batch: SyncRecords = parse_sync_records(SAMPLE.as_bytes(), &config()).unwrap();
    assert_eq!(
        serde_json::to_value(&batch).unwrap(),
        json!({
            "id": SYNC_ID,
            "name": "Webhook HTTP Endpoint sync",
            "records": [{"hash": "b7421c6c57bd49f7", "fields": {
                "email": "nathan@polytomic.com", "last_login": "2020-12-02T00:00:00Z"}}],
            "metadata": {}
        })
    );
    let event = parse::<RawFields>(SAMPLE.as_bytes(), &config()).unwrap();
    let reparsed: serde_json::Value = serde_json::to_value(&event).unwrap();
    let original: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
    assert_eq!(reparsed, original);
    // And the serde impls read the same shapes back, raw text and all.
    let again: SyncRecords = serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
    assert_eq!(again, batch);
    let again: PolytomicEvent = serde_json::from_str(SAMPLE).unwrap();
    assert_eq!(again, event);
}

#[test]
fn echoed_text_is_bounded() {
    let huge = "x".repeat(100_000);
    let body = envelope(&format!(
        r#"[{{"hash":"h","fields":{{"email":"{huge}","last_login":5}}}}]"#
    ));
    let rejection = reject::<User>(&body, &config());
    assert!(rejection.body_text().len() < 4096);
    let body = format!(r#"{{"event":"{huge}","object":{{}}}}"#);
    let rejection = reject::<Fields>(&body, &config());
    assert!(rejection.body_text().len() < 4096);
}

/// Found by fuzzing: without correctly rounded float parsing, a long decimal read as one float
/// and its re-serialisation read as another, so a batch did not survive a round trip. Such a
/// decimal is now kept exactly by the default `RawFields`, and refused by `Fields`, which would
/// round it.
#[test]
fn long_decimals_are_kept_exactly_or_refused() {
    let number =
        "2.34444444444444444444444444444444444444444444444444444444444444444444444444444444444475";
    let body = envelope(&format!(r#"[{{"hash":"h","fields":{{"f":{number}}}}}]"#));
    let event = parse::<RawFields>(body.as_bytes(), &EventConfig::default()).unwrap();
    let PolytomicEvent::SyncRecords(batch) = &event else {
        panic!("a sync.records batch");
    };
    assert_eq!(batch.records()[0].fields().get("f").unwrap().get(), number);
    let again = serde_json::to_vec(&event).unwrap();
    assert_eq!(
        parse::<RawFields>(&again, &EventConfig::default()).unwrap(),
        event
    );
    let rejection = parse::<Fields>(body.as_bytes(), &EventConfig::default()).unwrap_err();
    assert_eq!(rejection.code(), "inexact_number");
}

/// Issue #12, point 3: numbers that a float would change, in every position of a record.
#[tokio::test]
async fn numbers_are_never_silently_changed() {
    for number in [
        "18446744073709551616",
        "123456789012345678901234567890123456789",
        "0.1000000000000000055511151231257827",
        "1e-400",
    ] {
        for fields in [
            format!(r#"{{"n":{number}}}"#),
            format!(r#"{{"a":"x","n":[1,{{"deep":{number}}}]}}"#),
        ] {
            let body = envelope(&format!(
                r#"[{{"hash":"h","fields":{{"ok":1.5}}}},{{"hash":"h","fields":{fields}}}]"#
            ));
            let batch: SyncRecords = parse_sync_records(body.as_bytes(), &config()).unwrap();
            assert!(batch.records()[1].fields().as_str().contains(number));
            let reply = assert_rejects::<Fields>(
                &body,
                &config(),
                422,
                "inexact_number",
                Some("object.records[1].fields.n"),
            )
            .await;
            assert!(!reply.body.to_string().contains(number), "{}", reply.body);
        }
    }
    // What an f64 holds exactly goes through, also when a long number sits in a string.
    let body = envelope(
        r#"[{"hash":"h","fields":{"a":0.1,"b":18446744073709551615,"c":"123456789012345678901","d":1.8446744073709552e19,"e":0.0}}]"#,
    );
    let batch: SyncRecords<Fields> = parse_sync_records(body.as_bytes(), &config()).unwrap();
    assert_eq!(batch.records()[0].fields()["b"], 18446744073709551615_u64);
}

/// Issue #24: numbers beyond a float's range are valid JSON that a float cannot hold, so they
/// are inexact (422 with their path) for record types that build numbers, not malformed; the
/// default `RawFields` keeps their text.
#[tokio::test]
async fn numbers_beyond_the_float_range_are_inexact_not_malformed() {
    for number in ["1e400", "-1e400", "1.7976931348623159e308"] {
        let body = envelope(&format!(
            r#"[{{"hash":"h","fields":{{"n":1.5}}}},{{"hash":"h","fields":{{"a":"x","n":{number}}}}}]"#
        ));
        let batch: SyncRecords = parse_sync_records(body.as_bytes(), &config()).unwrap();
        assert_eq!(batch.records()[1].fields().get("n").unwrap().get(), number);
        let path = Some("object.records[1].fields.n");
        assert_rejects::<Fields>(&body, &config(), 422, "inexact_number", path).await;
        assert_rejects::<Measured>(&body, &config(), 422, "inexact_number", path).await;
    }
}

/// A record type that skips what it does not name: the nesting of skipped members counts too.
#[derive(Debug, serde::Deserialize)]
struct Measured {
    #[allow(dead_code)] // Only whether it is built matters.
    n: f64,
}

/// Objects and arrays nested `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The 1-based column of the first `[` or `{` past `limit` levels of a one-line body without
/// brackets in its strings: the reference the rejections are held to.
fn column_past(body: &str, limit: usize) -> u64 {
    let mut depth = 0;
    for (at, byte) in body.bytes().enumerate() {
        match byte {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth > limit {
            return at as u64 + 1;
        }
    }
    panic!("nested within {limit}: {body}");
}

/// Asserts 400 `invalid_json` at the first bracket past `limit`, for every record type.
async fn assert_too_deep(body: &str, config: &EventConfig, limit: usize) {
    let column = column_past(body, limit);
    for rejection in [
        parse_sync_records::<RawFields>(body.as_bytes(), config).unwrap_err(),
        parse_sync_records::<Fields>(body.as_bytes(), config).unwrap_err(),
        parse_sync_records::<Measured>(body.as_bytes(), config).unwrap_err(),
    ] {
        let reply = answer(rejection.into_response()).await;
        reply.assert_problem(400, "invalid_json");
        assert_eq!(reply.body["line"], 1, "{}", reply.body);
        assert_eq!(reply.body["column"], column, "{}", reply.body);
    }
}

/// Issue #24: nesting is limited over the whole body for every record type, `RawFields`
/// (whose text serde_json skims without counting) as much as those that build: the 128th level
/// is refused where serde_json refuses it, the 127th passes, and a lower limit is honoured.
#[tokio::test]
async fn nesting_past_the_limit_is_invalid_json_for_every_record_type() {
    // A record's fields are the fifth level: their members may nest 122 more.
    let fields = |depth: usize| {
        envelope(&format!(
            r#"[{{"hash":"h","fields":{{"n":1}}}},{{"hash":"h","fields":{{"n":1,"a":{}}}}}]"#,
            nested(depth)
        ))
    };
    assert_too_deep(&fields(200), &config(), 127).await;
    assert_too_deep(&fields(123), &config(), 127).await;
    let at_the_limit = fields(122);
    parse_sync_records::<RawFields>(at_the_limit.as_bytes(), &config()).unwrap();
    parse_sync_records::<Fields>(at_the_limit.as_bytes(), &config()).unwrap();
    parse_sync_records::<Measured>(at_the_limit.as_bytes(), &config()).unwrap();
    // serde_json itself stops there when it builds the whole body.
    assert!(serde_json::from_str::<serde_json::Value>(&fields(123)).is_err());
    serde_json::from_str::<serde_json::Value>(&at_the_limit).unwrap();

    let lower = config().max_depth(10);
    assert_too_deep(&fields(6), &lower, 10).await;
    let within = fields(5);
    parse_sync_records::<RawFields>(within.as_bytes(), &lower).unwrap();
    parse_sync_records::<Fields>(within.as_bytes(), &lower).unwrap();
    parse_sync_records::<Measured>(within.as_bytes(), &lower).unwrap();
    // A higher limit than serde_json's counts as serde_json's.
    assert_too_deep(&fields(123), &config().max_depth(1000), 127).await;
    // A record type that skips the fields whole still has them checked as `RawFields` are.
    type Skipped = serde::de::IgnoredAny;
    parse_sync_records::<Skipped>(at_the_limit.as_bytes(), &config()).unwrap();
    for (body, code) in [
        (fields(123), "invalid_json"),
        (
            envelope(r#"[{"hash":"h","fields":[1]}]"#),
            "invalid_envelope",
        ),
        (
            envelope(r#"[{"hash":"h","fields":{"a":1,"a":2}}]"#),
            "duplicate_field_name",
        ),
    ] {
        let rejection = parse_sync_records::<Skipped>(body.as_bytes(), &config()).unwrap_err();
        assert_eq!(rejection.code(), code, "{rejection}");
    }

    // Everywhere else in the body that is skimmed or kept raw.
    let deep = nested(200);
    let batch = |extra: &str| {
        format!(
            r#"{{"id":"{SYNC_ID}","name":"n","records":[{{"hash":"h","fields":{{"n":1}},"x":{extra}}}]}}"#
        )
    };
    for body in [
        format!(
            r#"{{"event":"sync.records","x":{deep},"object":{}}}"#,
            batch("1")
        ),
        format!(r#"{{"event":"sync.records","object":{}}}"#, batch(&deep)),
        format!(
            r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"x":{deep}}}}}"#
        ),
        format!(
            r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"metadata":{{"m":{deep}}}}}}}"#
        ),
        format!(r#"{{"object":{},"event":"sync.records"}}"#, batch(&deep)),
    ] {
        assert_too_deep(&body, &config(), 127).await;
    }
    let unknown = format!(r#"{{"event":"sync.other","object":{{"a":{deep}}}}}"#);
    let rejection = parse::<RawFields>(unknown.as_bytes(), &config()).unwrap_err();
    assert_eq!(
        (rejection.status().as_u16(), rejection.code()),
        (400, "invalid_json")
    );
}

/// Issue #24: 15 million levels (30 MB) in a record's fields are refused for every record type
/// without recursion (no stack overflow) and in time linear in the body. (`RawFields` takes
/// nearly all of the test's time, serde_json skimming the 30 MB unoptimised.)
#[test]
fn fifteen_million_levels_are_refused_without_recursion() {
    let depth = 15_000_000;
    let body = envelope(&format!(
        r#"[{{"hash":"h","fields":{{"n":{}}}}}]"#,
        nested(depth)
    ));
    let config = config().max_body_bytes(64 << 20);
    let column = column_past(&body, 127);
    for rejection in [
        parse_sync_records::<RawFields>(body.as_bytes(), &config).unwrap_err(),
        parse_sync_records::<Fields>(body.as_bytes(), &config).unwrap_err(),
        parse_sync_records::<Measured>(body.as_bytes(), &config).unwrap_err(),
    ] {
        let EventRejection::InvalidJson(error) = rejection else {
            panic!("invalid_json: {rejection}");
        };
        assert_eq!((error.line(), error.column() as u64), (1, column));
    }
}

/// Found by fuzzing: serde_json does not check the UTF-8 of strings it skips, so invalid bytes
/// inside an unknown member were accepted. JSON text must be UTF-8 throughout.
#[test]
fn invalid_utf8_anywhere_is_invalid_json() {
    let mut body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7","name":"n","records":[],"extra":{"team":"g"#.to_vec();
    body.extend_from_slice(b"\xff\xfe");
    body.extend_from_slice(br#""}}}"#);
    let error = parse::<Fields>(&body, &EventConfig::default()).unwrap_err();
    assert_eq!(error.status(), 400);
    assert_eq!(error.code(), "invalid_json");
    let EventRejection::InvalidJson(error) = error else {
        panic!("invalid_json");
    };
    assert_eq!(error.line(), 1);
    assert!(error.column() > 100, "{}", error.column());
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // Only deserialized.
enum Plan {
    Free,
    Paid,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // Only deserialized.
struct Customer {
    email: String,
    last_login: DateTime<Utc>,
    plan: Plan,
    visits: u32,
}

/// Issue #12, point 6: whatever 4xx a body earns, the values it carries never appear in the
/// answer. Each marker sits where a refusal can reach it: a mistyped field of every JSON kind, an
/// unparsable date, an unknown enum variant, a wrong envelope member, metadata, a broken string.
#[tokio::test]
async fn problem_bodies_never_echo_values() {
    const TEXT: &str = "SSN-078-05-1120";
    const NUMBER: &str = "9078051120";
    let record = |fields: &str| envelope(&format!(r#"[{{"hash":"h","fields":{fields}}}]"#));
    let bodies = [
        record(&format!(r#""{TEXT}""#)),
        record(NUMBER),
        record(&format!(
            r#"{{"email":{NUMBER},"last_login":"2020-12-02T00:00:00Z","plan":"Free","visits":1}}"#
        )),
        record(&format!(
            r#"{{"email":"a","last_login":"{TEXT}","plan":"Free","visits":1}}"#
        )),
        record(&format!(
            r#"{{"email":"a","last_login":"2020-12-02T00:00:00Z","plan":"{TEXT}","visits":1}}"#
        )),
        record(&format!(
            r#"{{"email":"a","last_login":"2020-12-02T00:00:00Z","plan":"Free","visits":{NUMBER}9}}"#
        )),
        record(&format!(
            r#"{{"email":"a","last_login":"2020-12-02T00:00:00Z","plan":"Free","visits":"{TEXT}"}}"#
        )),
        record(&format!(
            r#"{{"email":true,"last_login":{NUMBER}.5,"plan":"Free","visits":1}}"#
        )),
        format!(r#"{{"event":"sync.records","object":{{"id":"{TEXT}","name":"n","records":[]}}}}"#),
        format!(
            r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":{NUMBER},"records":[]}}}}"#
        ),
        format!(
            r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[{{"hash":{NUMBER},"fields":{{}}}}]}}}}"#
        ),
        format!(
            r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"metadata":"{TEXT}"}}}}"#
        ),
        format!(r#"{{"event":{NUMBER},"object":{{}}}}"#),
        format!(r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"{TEXT}"#),
    ];
    for body in &bodies {
        for (kind, rejection) in [
            (
                "raw",
                parse_sync_records::<RawFields>(body.as_bytes(), &config()).err(),
            ),
            (
                "map",
                parse_sync_records::<Fields>(body.as_bytes(), &config()).err(),
            ),
            (
                "typed",
                parse_sync_records::<Customer>(body.as_bytes(), &config()).err(),
            ),
        ] {
            let Some(rejection) = rejection else {
                assert_ne!(kind, "typed", "the typed record must refuse: {body}");
                continue;
            };
            let shown = format!("{rejection} {rejection:?}");
            let reply = answer(rejection.into_response()).await;
            assert!((400..500).contains(&reply.status), "{kind} {body}");
            let text = reply.body.to_string();
            for marker in [TEXT, NUMBER] {
                assert!(!text.contains(marker), "{kind}: {text}");
                assert!(!shown.contains(marker), "{kind}: {shown}");
            }
        }
    }
}

/// Issue #12, point 7: a name given twice in `fields` or `metadata` is refused at its second
/// occurrence, for every record type, however many names the object has.
#[tokio::test]
async fn duplicate_names_are_refused() {
    let many: String = (0..100).map(|i| format!(r#""n{i}":{i},"#)).collect();
    let cases = [
        (
            envelope(r#"[{"hash":"h","fields":{"email":"a","x":1,"email":"b"}}]"#),
            "object.records[0].fields.email",
        ),
        (
            envelope(&format!(
                r#"[{{"hash":"h","fields":{{}}}},{{"hash":"h","fields":{{{many}"n42":0}}}}]"#
            )),
            "object.records[1].fields.n42",
        ),
        (
            envelope(r#"[{"hash":"h","fields":{"a":1,"\u0061":2}}]"#),
            "object.records[0].fields.a",
        ),
        // Names past the eight bytes the quick check reads at once, alike in those eight.
        (
            envelope(
                r#"[{"hash":"h","fields":{"abcdefgh-one":1,"abcdefgh-two":[2],"abcdefgh-one":"3","tail":0}}]"#,
            ),
            "object.records[0].fields.abcdefgh-one",
        ),
        (
            format!(
                r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"metadata":{{"team":"a","team":"b"}}}}}}"#
            ),
            "object.metadata.team",
        ),
        (
            format!(
                r#"{{"object":{{"id":"{SYNC_ID}","name":"n","records":[{{"hash":"h","fields":{{"a":1,"a":1}}}}]}},"event":"sync.records"}}"#
            ),
            "object.records[0].fields.a",
        ),
    ];
    for (body, path) in &cases {
        assert_rejects::<RawFields>(body, &config(), 422, "duplicate_field_name", Some(path)).await;
        assert_rejects::<Fields>(body, &config(), 422, "duplicate_field_name", Some(path)).await;
    }
    // The same name in two records, or nested in a value, is not a duplicate.
    let body = envelope(r#"[{"hash":"h","fields":{"a":{"a":1}}},{"hash":"h","fields":{"a":2}}]"#);
    let batch: SyncRecords<Fields> = parse_sync_records(body.as_bytes(), &config()).unwrap();
    assert_eq!(batch.len(), 2);
}

/// A record's raw fields are the body's own text, whitespace and all, cut without a copy.
#[test]
fn raw_fields_are_the_bodys_text() {
    let fields = "{ \"email\" : \"a@b.c\",\n  \"n\": 1.50 }";
    let body = envelope(&format!(
        r#"[{{"hash":"h","fields":{fields}}},{{"hash":"i","fields":{{}}}}]"#
    ));
    let batch: SyncRecords = parse_sync_records(body.as_bytes(), &config()).unwrap();
    assert_eq!(batch.records()[0].fields().as_str(), fields);
    assert!(batch.records()[1].fields().is_empty());
}

/// Found by fuzzing: a lone surrogate escape in a record was kept by `RawFields` (200) while
/// `Fields` refused the same body (400). Wherever raw text is kept, it is now refused as a
/// parse that decodes the string refuses it: same code, same line and column.
#[test]
fn lone_surrogates_are_refused_alike_by_raw_and_decoded_fields() {
    let records = |fields: &str| {
        envelope(&format!(
            r#"[{{"hash":"0","fields":{{"n":"A\u00e9\u4e2d"}}}},{{"hash":"1","fields":{fields}}}]"#
        ))
    };
    let bodies = [
        records(r#"{"$first_name":"A\u00e9\ude24","n":2}"#),
        records(r#"{"n":2,"tags":["x","\ud800"]}"#),
        records(r#"{"\udc00\ud800":2}"#),
        format!(
            r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"metadata":{{"team":"\ud800z"}}}}}}"#
        ),
        // `object` before `event`: read in a second pass over the object's text.
        format!(
            r#"{{"object":{{"id":"{SYNC_ID}","name":"n","records":[{{"hash":"h","fields":{{"a":"\ude24"}}}}]}},"event":"sync.records"}}"#
        ),
    ];
    for body in &bodies {
        let decoded = serde_json::from_str::<serde_json::Value>(body).unwrap_err();
        let raw = parse::<RawFields>(body.as_bytes(), &config()).unwrap_err();
        let fields = parse::<Fields>(body.as_bytes(), &config()).unwrap_err();
        for rejection in [raw, fields] {
            assert_eq!(rejection.status(), 400, "{body}");
            assert_eq!(rejection.code(), "invalid_json", "{body}");
            let EventRejection::InvalidJson(error) = rejection else {
                panic!("invalid_json");
            };
            let at = (error.line(), error.column());
            assert_eq!(at, (decoded.line(), decoded.column()), "{body}");
        }
    }
    // An unknown event's object is kept raw whatever the record type.
    let unknown = r#"{"event":"sync.other","object":{"a":["\ud800"]}}"#;
    let decoded = serde_json::from_str::<serde_json::Value>(unknown).unwrap_err();
    let EventRejection::InvalidJson(error) =
        parse::<RawFields>(unknown.as_bytes(), &config()).unwrap_err()
    else {
        panic!("invalid_json");
    };
    assert_eq!(
        (error.line(), error.column()),
        (decoded.line(), decoded.column())
    );
    // A valid pair, and an escaped backslash before `u`, are text like any other.
    let body = records(r#"{"a":"\ud83d\ude00","b":"\\ud800"}"#);
    let batch = parse_sync_records::<RawFields>(body.as_bytes(), &config()).unwrap();
    let value: serde_json::Value = batch.records()[1].fields().deserialize_as().unwrap();
    assert_eq!(value, json!({"a": "😀", "b": "\\ud800"}));
}

/// The fuzz input itself: the raw batch is refused, so nothing unreadable is acknowledged.
#[test]
fn the_lone_surrogate_fuzz_input_is_refused() {
    let body = include_bytes!("data/lone-surrogate");
    for rejection in [
        parse::<RawFields>(body, &config()).unwrap_err(),
        parse::<Fields>(body, &config()).unwrap_err(),
    ] {
        assert_eq!(rejection.code(), "invalid_json");
    }
}
