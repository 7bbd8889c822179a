//! Deterministic `sync.records` deliveries shaped like real ones.

use std::fmt::Write as _;
use std::io::Write as _;

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// The batch sizes every benchmark runs: a small, a typical and a large delivery.
pub const SIZES: [usize; 3] = [100, 1_000, 10_000];

/// One delivery body, plain and gzipped, ready to be sent many times.
///
/// ```
/// use polytomic_webhook_bench::payload::Payload;
///
/// let payload = Payload::generate(10);
/// assert_eq!(payload.records, 10);
/// assert!(payload.gzip.len() < payload.json.len());
/// assert_eq!(Payload::generate(10).gzip, payload.gzip); // deterministic
/// ```
#[derive(Clone, Debug)]
pub struct Payload {
    /// How many records the batch holds.
    pub records: usize,
    /// The JSON envelope.
    pub json: Bytes,
    /// The same, gzipped at level 6 (what Go's default writer produces).
    pub gzip: Bytes,
}

impl Payload {
    /// The batch of `records` records; the same bytes on every call.
    pub fn generate(records: usize) -> Self {
        let json = Bytes::from(envelope(records));
        let gzip = Bytes::from(gzip(&json));
        Self {
            records,
            json,
            gzip,
        }
    }
}

impl Payload {
    /// `count` gzipped copies of the batch, each from its own sync (ids `first`, `first + 1`,
    /// …): to a sink, every copy's records are new.
    pub fn from_syncs(&self, first: usize, count: usize) -> Vec<Bytes> {
        let text = String::from_utf8_lossy(&self.json);
        let id = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|envelope| envelope["object"]["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (first..first + count)
            .map(|sync| {
                let other = format!("00000000-0000-4000-8000-{sync:012}");
                Bytes::from(gzip(text.replacen(&id, &other, 1).as_bytes()))
            })
            .collect()
    }
}

/// Gzip at level 6, as Polytomic's Go sender does by default.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing to a `Vec` cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Edsger", "Radia",
    "Donald", "Sophie",
];
const LAST_NAMES: [&str; 12] = [
    "Lovelace", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen",
    "Dijkstra", "Perlman", "Knuth", "Wilson",
];
const COMPANIES: [&str; 6] = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Holdings",
    "Stark Industries",
    "Wayne Enterprises",
];
const PLANS: [&str; 4] = ["free", "starter", "growth", "enterprise"];
const TAGS: [&str; 6] = [
    "beta",
    "vip",
    "churn-risk",
    "newsletter",
    "trial",
    "partner",
];

fn envelope(records: usize) -> Vec<u8> {
    // A fixed seed: every run, and every pipeline, sees the same bytes.
    let mut rng = fastrand::Rng::with_seed(0x5eed_0fb0_d1e5);
    let records: Vec<Value> = (0..records).map(|i| record(&mut rng, i)).collect();
    let mut metadata = Map::new();
    metadata.insert("destination".into(), json!("warehouse"));
    metadata.insert("team".into(), json!("growth"));
    metadata.insert("priority".into(), json!(2));
    let envelope = json!({
        "event": "sync.records",
        "object": {
            "id": uuid(&mut rng),
            "name": "Contacts to webhook",
            "records": records,
            "metadata": metadata,
        }
    });
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// About twelve fields of the types a sync carries: strings, timestamps, numbers, booleans,
/// `null` and a short array.
fn record(rng: &mut fastrand::Rng, index: usize) -> Value {
    let first = FIRST_NAMES[rng.usize(..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.usize(..LAST_NAMES.len())];
    let tags: Vec<&str> = (0..rng.usize(0..=3))
        .map(|_| TAGS[rng.usize(..TAGS.len())])
        .collect();
    let last_login = if rng.bool() {
        Value::String(timestamp(rng))
    } else {
        Value::Null
    };
    json!({
        "hash": hex16(rng),
        "fields": {
            "id": 100_000 + index,
            "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), index),
            "first_name": first,
            "last_name": last,
            "company": COMPANIES[rng.usize(..COMPANIES.len())],
            "plan": PLANS[rng.usize(..PLANS.len())],
            "created_at": timestamp(rng),
            "last_login": last_login,
            "seats": rng.u32(1..500),
            "lifetime_value": f64::from(rng.u32(0..10_000_000)) / 100.0,
            "score": rng.f64(),
            "is_active": rng.bool(),
            "tags": tags,
        }
    })
}

fn hex16(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}", rng.u64(..))
}

fn uuid(rng: &mut fastrand::Rng) -> String {
    let bits = rng.u128(..);
    // Version 4, RFC 4122 variant.
    let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    let mut text = String::with_capacity(36);
    for (i, range) in [0..8, 8..12, 12..16, 16..20, 20..32]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            text.push('-');
        }
        text.push_str(&hex[range]);
    }
    text
}

fn timestamp(rng: &mut fastrand::Rng) -> String {
    let mut text = String::with_capacity(20);
    let _ = write!(
        text,
        "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        rng.u8(18..26),
        rng.u8(1..=12),
        rng.u8(1..=28),
        rng.u8(0..24),
        rng.u8(0..60),
        rng.u8(0..60),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_the_described_shape() {
        let payload = Payload::generate(25);
        let value: Value = serde_json::from_slice(&payload.json).unwrap();
        assert_eq!(value["event"], "sync.records");
        let object = &value["object"];
        let id = object["id"].as_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let records = object["records"].as_array().unwrap();
        assert_eq!(records.len(), 25);
        for record in records {
            let hash = record["hash"].as_str().unwrap();
            assert_eq!(hash.len(), 16);
            assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(record["fields"].as_object().unwrap().len(), 13);
        }
        assert!(
            object["metadata"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        );
        let inflated = {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&payload.gzip[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        assert_eq!(inflated, payload.json);
    }
}
