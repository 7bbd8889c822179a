//! The extractor's plain parse function on arbitrary bytes, with default and strict settings.
//!
//! Invariants: never a panic; every refusal is a documented 4xx (or the 200 acknowledgement of
//! an unknown event); text serde_json cannot read is `invalid_json` (or `too_many_records`, when
//! the count was passed before the fault); an accepted batch
//! serializes and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polytomic_webhook_event::{
    EventConfig, Fields, PolytomicEvent, RawFields, UnknownEventPolicy, parse,
};

fuzz_target!(|data: &[u8]| {
    let strict = EventConfig::default()
        .max_records(3)
        .normalize_field_names(true)
        .unknown_events(UnknownEventPolicy::Reject);
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    for config in [EventConfig::default(), strict] {
        // The default record type: whatever `Fields` accepts, raw text accepts too, and an
        // accepted raw batch round-trips.
        let raw = parse::<RawFields>(data, &config);
        if let Ok(PolytomicEvent::SyncRecords(batch)) = &raw {
            let again = serde_json::to_vec(batch).unwrap();
            let object: serde_json::Value = serde_json::from_slice(&again).unwrap();
            assert!(object.is_object());
        }
        let built = parse::<Fields>(data, &config);
        if built.is_ok() {
            assert!(raw.is_ok(), "Fields accepted what RawFields refused");
        }
        match built {
            Ok(event) => {
                assert!(is_json);
                if let PolytomicEvent::SyncRecords(batch) = &event {
                    assert!(batch.len() <= config.max_records);
                    let again = serde_json::to_vec(&event).unwrap();
                    let reparsed = parse::<Fields>(&again, &config).unwrap();
                    assert_eq!(reparsed, event);
                }
            }
            Err(rejection) => {
                let status = rejection.status().as_u16();
                assert!(
                    matches!(status, 200 | 400 | 413 | 422),
                    "{status} {}",
                    rejection.code()
                );
                assert!(!rejection.code().is_empty());
                // Text that is not JSON is invalid_json, unless the record count was passed
                // first: that check stops reading without looking at the rest.
                if !is_json {
                    assert!(
                        matches!(rejection.code(), "invalid_json" | "too_many_records"),
                        "{}: {}",
                        rejection.code(),
                        rejection.body_text()
                    );
                }
            }
        }
    }
});
