//! The heap budget measured against a counting allocator: the estimates cover what
//! `serde_json`'s `Value` really allocates, a hostile body is refused with the heap inside the
//! budget, and an ordinary 10,000-record batch fits the default with room to spare.
//!
//! With `-- --timing` (best in release: `cargo test --release -p polytomic-webhook-event --test
//! budget_heap -- --timing`) it also times a 1,000-record batch with and without the budget.
//!
//! The allocator counts every thread, so this binary runs without the test harness: one `main`,
//! one measurement at a time, nothing else allocating meanwhile. The budget module is private
//! to the crate, so it is compiled in here from its source.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Test code: a failed unwrap is a failed test.

// Its unit tests' helpers are unused here: this binary has no test harness.
#[allow(dead_code)]
#[path = "../src/budget.rs"]
mod budget;

use std::fmt::Write as _;

use budget::{Budget, DEFAULT_LIMIT, MAP_NODE, deserialize_within};
use peak_alloc::PeakAlloc;
use serde::Deserialize;
use serde_json::{Map, Value};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;

/// What parsing `json` as `T` within `limit` did.
struct Measured<T> {
    parsed: Result<T, serde_json::Error>,
    /// The budget's estimate.
    charged: usize,
    exceeded: bool,
    /// The most the heap held at once during the parse, above what it held before.
    peak: usize,
    /// What the parsed value still holds afterwards.
    retained: usize,
}

fn measure<'de, T: Deserialize<'de>>(json: &'de str, limit: usize) -> Measured<T> {
    let budget = Budget::new(limit);
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let parsed = deserialize_within(&mut deserializer, &budget, 0);
    let peak = HEAP.peak_usage() - before;
    let retained = HEAP.current_usage().saturating_sub(before);
    Measured {
        parsed,
        charged: budget.used(),
        exceeded: budget.exceeded(),
        peak,
        retained,
    }
}

/// The heap `value` holds, measured by building a clone of it.
fn heap_of(value: &Value) -> usize {
    let before = HEAP.current_usage();
    let clone = value.clone();
    let held = HEAP.current_usage() - before;
    drop(clone);
    held
}

/// Node sizes, and the estimate against real maps and arrays of every size up to 600, with
/// keys in ascending, descending and scattered order (the order decides how full the nodes are).
fn estimates_cover_real_maps_and_arrays() {
    let leaf = heap_of(&serde_json::json!({"": 0}));
    // Twelve one-byte keys: one more than a leaf holds, so two leaves under an internal node.
    let twelve: Value = serde_json::from_str(
        r#"{"a":0,"b":0,"c":0,"d":0,"e":0,"f":0,"g":0,"h":0,"i":0,"j":0,"k":0,"l":0}"#,
    )
    .unwrap();
    let internal = heap_of(&twelve) - 12 - 2 * leaf;
    println!("BTreeMap<String, Value> node: leaf {leaf} bytes, internal {internal} bytes");
    assert!(
        leaf <= MAP_NODE && internal <= MAP_NODE,
        "MAP_NODE {MAP_NODE} is too small"
    );

    let mut worst = 0.0_f64;
    for n in 1..=600_usize {
        let orders: [Box<dyn Fn(usize) -> usize>; 3] = [
            Box::new(|i| i),
            Box::new(move |i| n - i),
            Box::new(move |i| (i * 7919) % (n + 1)),
        ];
        for order in &orders {
            let mut json = String::from("{");
            for i in 0..n {
                let _ = write!(json, r#""{:05}":{i},"#, order(i));
            }
            json.pop();
            json.push('}');
            let measured = measure::<Value>(&json, usize::MAX);
            assert!(measured.parsed.is_ok());
            assert!(
                measured.peak <= measured.charged,
                "a map of {n} entries: {} bytes at peak, {} charged",
                measured.peak,
                measured.charged
            );
            worst = worst.max(measured.peak as f64 / measured.charged as f64);
        }
        let array = format!("[{}0]", "0,".repeat(n - 1));
        let measured = measure::<Value>(&array, usize::MAX);
        assert!(
            measured.peak <= measured.charged,
            "an array of {n} elements: {} bytes at peak, {} charged",
            measured.peak,
            measured.charged
        );
    }
    println!("maps of 1..=600 entries: peak heap is at most {worst:.2} of the charge");
}

/// `{"a":[{"":0},…]}` of 1 MiB, within a 4 MiB budget.
fn a_hostile_body_is_refused_with_the_heap_inside_the_budget() {
    let limit = 4 * MIB;
    let elements = MIB / 7;
    let json = format!(r#"{{"a":[{}{{"":0}}]}}"#, r#"{"":0},"#.repeat(elements - 1));

    // Without a budget the same body takes about a hundred times its size, far more than the
    // budget: the refusal below is the budget's doing.
    let unbounded = measure::<Map<String, Value>>(&json, usize::MAX);
    assert!(unbounded.parsed.is_ok());
    drop(unbounded.parsed);
    assert!(unbounded.peak > 90 * json.len(), "{}", unbounded.peak);

    let bounded = measure::<Map<String, Value>>(&json, limit);
    let error = bounded.parsed.unwrap_err();
    assert!(bounded.exceeded);
    assert!(error.to_string().contains("heap budget"), "{error}");
    println!(
        "hostile body of {} bytes: {} bytes of heap at peak without a budget ({:.0}x the body); \
         refused within {limit} with {} at peak ({} slack allowed)",
        json.len(),
        unbounded.peak,
        unbounded.peak as f64 / json.len() as f64,
        bounded.peak,
        64 * 1024,
    );
    assert!(bounded.peak <= limit + 64 * 1024, "{}", bounded.peak);
}

/// One `{"hash":…,"fields":{…}}` record of 13 fields of the usual kinds, about 340 bytes.
fn ordinary_record(json: &mut String, i: usize) {
    const NAMES: [(&str, &str); 6] = [
        ("Ada", "Lovelace"),
        ("Grace", "Hopper"),
        ("Margaret", "Hamilton"),
        ("Edsger", "Dijkstra"),
        ("Barbara", "Liskov"),
        ("Radia", "Perlman"),
    ];
    const COMPANIES: [&str; 4] = ["Acme Corp", "Globex", "Initech", "Umbrella Holdings"];
    const PLANS: [&str; 4] = ["free", "starter", "growth", "enterprise"];
    // A cheap scramble so neighbouring records differ.
    let r = i.wrapping_mul(2_654_435_761) >> 7;
    let (first, last) = NAMES[r % NAMES.len()];
    let last_login = if r % 2 == 0 {
        format!(
            r#""2024-{:02}-{:02}T{:02}:{:02}:00Z""#,
            r % 12 + 1,
            r % 28 + 1,
            r % 24,
            r % 60
        )
    } else {
        "null".to_owned()
    };
    let _ = write!(
        json,
        r#"{{"hash":"{r:016x}","fields":{{"id":{id},"email":"{first_lower}.{last_lower}{i}@example.com","first_name":"{first}","last_name":"{last}","company":"{company}","plan":"{plan}","created_at":"2021-{month:02}-{day:02}T08:30:00Z","last_login":{last_login},"seats":{seats},"lifetime_value":{value}.{cents:02},"score":0.{score:016},"is_active":{active},"country":"GB"}}}}"#,
        id = 100_000 + i,
        first_lower = first.to_lowercase(),
        last_lower = last.to_lowercase(),
        company = COMPANIES[r % COMPANIES.len()],
        plan = PLANS[(r / 7) % PLANS.len()],
        month = r % 12 + 1,
        day = r % 28 + 1,
        seats = r % 500 + 1,
        value = r % 100_000,
        cents = r % 100,
        score = r % 10_000_000_000_000_000,
        active = r % 3 != 0,
    );
}

#[derive(Deserialize)]
#[allow(dead_code)] // Built to be measured.
struct Record {
    hash: String,
    fields: Map<String, Value>,
}

/// A JSON array of `records` ordinary records.
fn ordinary_batch(records: usize) -> String {
    let mut json = String::from("[");
    for i in 0..records {
        ordinary_record(&mut json, i);
        json.push(',');
    }
    json.pop();
    json.push(']');
    json
}

/// 10,000 ordinary records within the default.
fn an_ordinary_10_000_record_batch_fits_the_default_four_times_over() {
    let records = 10_000;
    let json = ordinary_batch(records);

    let measured = measure::<Vec<Record>>(&json, DEFAULT_LIMIT);
    let parsed = measured.parsed.unwrap();
    assert_eq!(parsed.len(), records);
    assert!(parsed.iter().all(|record| record.fields.len() == 13));
    assert!(!measured.exceeded);
    println!(
        "{records} ordinary records, {} bytes of JSON ({} a record): charged {} ({:.1}x the body), \
         heap at peak {} ({:.1}x), kept {} ({:.1}x); default {DEFAULT_LIMIT} = {:.1}x \
         the charge",
        json.len(),
        json.len() / records,
        measured.charged,
        measured.charged as f64 / json.len() as f64,
        measured.peak,
        measured.peak as f64 / json.len() as f64,
        measured.retained,
        measured.retained as f64 / json.len() as f64,
        DEFAULT_LIMIT as f64 / measured.charged as f64,
    );
    assert!(measured.peak <= measured.charged);
    assert!(4 * measured.charged <= DEFAULT_LIMIT);
}

/// The budget's cost on the hot path: the same 1,000-record batch parsed plainly and within the
/// budget, alternately, reporting the ratio of the medians. Prints only; timings vary too much
/// between machines to assert on.
fn time_the_adapter() {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    let json = ordinary_batch(1_000);
    let mut plain = Vec::new();
    let mut within = Vec::new();
    for _ in 0..300 {
        let start = Instant::now();
        black_box(serde_json::from_str::<Vec<Record>>(black_box(&json)).unwrap());
        plain.push(start.elapsed());

        let start = Instant::now();
        let budget = Budget::new(DEFAULT_LIMIT);
        let mut deserializer = serde_json::Deserializer::from_str(black_box(&json));
        black_box(deserialize_within::<Vec<Record>, _>(&mut deserializer, &budget, 0).unwrap());
        within.push(start.elapsed());
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (plain, within) = (median(&mut plain), median(&mut within));
    println!(
        "1,000 records ({} bytes): plain {plain:?}, within the budget {within:?}, ratio {:.3}",
        json.len(),
        within.as_secs_f64() / plain.as_secs_f64(),
    );
}

fn main() {
    if std::env::args().any(|arg| arg == "--timing") {
        time_the_adapter();
        return;
    }
    estimates_cover_real_maps_and_arrays();
    a_hostile_body_is_refused_with_the_heap_inside_the_budget();
    an_ordinary_10_000_record_batch_fits_the_default_four_times_over();
}
