//! How the extractor validates deliveries.

use serde::Deserialize;

/// Configuration of the extractor and of [`parse`](crate::parse).
///
/// Plain data: build it in code with the builder methods, or load it from a configuration file
/// (every key is optional). The extractors and [`read`](crate::read) look for it in the
/// request's extensions, where the composed layer puts it (or add it yourself with
/// `axum::Extension(config)` / `tower_http::add_extension`), so no global state is involved.
///
/// A request without one is read under `EventConfig::default()`. That is deliberate, not a
/// fallback for a mistake: the extractor is meant to work in a router with no layer in front,
/// and the defaults are the limits the composed layer uses when not configured otherwise.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, UnknownEventPolicy};
///
/// let config = EventConfig::default()
///     .max_records(10_000)
///     .normalize_field_names(true)
///     .unknown_events(UnknownEventPolicy::Reject);
/// assert_eq!(config.max_records, 10_000);
///
/// let from_file: EventConfig =
///     serde_json::from_str(r#"{"max_records": 500, "unknown_events": "reject"}"#).unwrap();
/// assert_eq!(from_file.max_records, 500);
/// assert_eq!(from_file.unknown_events, UnknownEventPolicy::Reject);
/// assert!(from_file.require_uuid_sync_id);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EventConfig {
    /// Most records accepted in one batch; more is a 413 `too_many_records`, detected while
    /// parsing. Default 100,000.
    pub max_records: usize,
    /// Most body bytes the extractor buffers itself; more is a 413 `body_too_large`. Default
    /// 32 MiB. This guards the extractor when it is used without the decompression layer; axum's
    /// `DefaultBodyLimit` (2 MB unless changed) and the decompression layer's limits apply as
    /// well, and whichever is smallest fires first.
    pub max_body_bytes: usize,
    /// Whether `object.id` must be a UUID. Default `true`; turn it off for senders whose sync ids
    /// are other non-empty strings.
    pub require_uuid_sync_id: bool,
    /// Whether record field names are normalised the way Polytomic does when its normalisation
    /// is on (see [`normalize_field_name`](crate::normalize_field_name)), before the fields are
    /// deserialized. Default `false`.
    pub normalize_field_names: bool,
    /// What the [`SyncRecords`](crate::SyncRecords) extractor answers for events it does not
    /// know. Default [`UnknownEventPolicy::Acknowledge`].
    pub unknown_events: UnknownEventPolicy,
    /// Most heap the records of one batch may take once built, as estimated while they are
    /// built; more is a 413 `body_too_large` with `limit: heap`, answered before the estimate
    /// is passed. Default 256 MiB.
    ///
    /// It matters for record types that build a tree ([`Fields`](crate::Fields), or your own
    /// type with maps and vectors), where a small hostile body can cost a hundred times its
    /// size. [`RawFields`](crate::RawFields), the default, builds nothing and is not charged.
    /// An ordinary record of 13 fields (about 335 bytes of JSON) is estimated at about 3.8 KB,
    /// so the default admits a batch of some 67,000 such records (10,000 take 38 MB).
    pub max_heap_bytes: usize,
    /// Most objects and arrays open at once, counted over the whole body from its top level:
    /// the envelope is the first, `object` the second, `records` the third, a record the
    /// fourth and its `fields` the fifth, so a record's fields may nest `max_depth - 5` levels
    /// below themselves. More is a 400 `invalid_json` at the `{` or `[` that passes the limit,
    /// for every record type alike, [`RawFields`](crate::RawFields) (whose text is scanned, as
    /// is any value skipped, and an unknown event's object) as much as the types that build.
    ///
    /// Default 127, serde_json's own limit (its recursion limit of 128 refuses the 128th level),
    /// which also caps this value: a larger one counts as 127, since serde_json stops there
    /// for record types that build. Lower it for consumers that nest less deeply.
    ///
    /// ```
    /// use polytomic_webhook_event::{EventConfig, parse};
    ///
    /// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
    ///     "name":"n","records":[{"hash":"h","fields":{"a":[[1]]}}]}}"#;
    /// assert!(parse::<polytomic_webhook_event::RawFields>(body, &EventConfig::default()).is_ok());
    /// let error = parse::<polytomic_webhook_event::RawFields>(body, &EventConfig::default().max_depth(6))
    ///     .unwrap_err();
    /// assert_eq!((error.status().as_u16(), error.code()), (400, "invalid_json"));
    /// ```
    pub max_depth: usize,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            max_records: 100_000,
            max_body_bytes: 32 * 1024 * 1024,
            require_uuid_sync_id: true,
            normalize_field_names: false,
            unknown_events: UnknownEventPolicy::Acknowledge,
            max_heap_bytes: crate::budget::DEFAULT_LIMIT,
            max_depth: crate::raw::MAX_DEPTH,
        }
    }
}

impl EventConfig {
    /// Sets [`max_records`](Self::max_records).
    #[must_use]
    pub fn max_records(mut self, max: usize) -> Self {
        self.max_records = max;
        self
    }

    /// Sets [`max_body_bytes`](Self::max_body_bytes).
    #[must_use]
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// Sets [`require_uuid_sync_id`](Self::require_uuid_sync_id).
    #[must_use]
    pub fn require_uuid_sync_id(mut self, require: bool) -> Self {
        self.require_uuid_sync_id = require;
        self
    }

    /// Sets [`normalize_field_names`](Self::normalize_field_names).
    #[must_use]
    pub fn normalize_field_names(mut self, normalize: bool) -> Self {
        self.normalize_field_names = normalize;
        self
    }

    /// Sets [`max_heap_bytes`](Self::max_heap_bytes).
    #[must_use]
    pub fn max_heap_bytes(mut self, max: usize) -> Self {
        self.max_heap_bytes = max;
        self
    }

    /// Sets [`max_depth`](Self::max_depth).
    #[must_use]
    pub fn max_depth(mut self, max: usize) -> Self {
        self.max_depth = max;
        self
    }

    /// Sets [`unknown_events`](Self::unknown_events).
    #[must_use]
    pub fn unknown_events(mut self, policy: UnknownEventPolicy) -> Self {
        self.unknown_events = policy;
        self
    }
}

/// What to answer for an event type the [`SyncRecords`](crate::SyncRecords) extractor does not
/// know.
///
/// Polytomic marks a sync failed on any 4xx or 5xx answer, and asks receivers to act only on
/// events they know; acknowledging is therefore the default.
///
/// ```
/// use polytomic_webhook_event::UnknownEventPolicy;
///
/// assert_eq!(UnknownEventPolicy::default(), UnknownEventPolicy::Acknowledge);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnknownEventPolicy {
    /// Answer 200 with `{"ignored_event":"<name>"}`, log at `info`, and do not run the handler.
    #[default]
    Acknowledge,
    /// Answer 422 `unknown_event`.
    Reject,
}
