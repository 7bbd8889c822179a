//! `serve --sink` and `dump`, the real binary over loopback: a SQLite receiver killed
//! mid-load, two replicas sharing one Redis, and a Redis that goes away and comes back. Also
//! `StoreService` behind the layer, as its metrics count it.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
#![cfg(unix)] // The crash test kills the receiver with SIGKILL.

mod support;

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use polytomic_webhook::testing::Delivery;
use polytomic_webhook_store::testing::check_sink;
use polytomic_webhook_store::{Durability, Identity, RedisSink, SqliteSink};
use serde_json::{Value, json};
use support::*;

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("store-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cli() -> Command {
    let mut command = Command::new(cli_binary());
    command
        .env_remove("POLYTOMIC_WEBHOOK_SECRET")
        .env_remove("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET")
        .stdin(Stdio::null());
    command
}

/// A running `serve --sink`, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    /// `serve --sink SINK` on a free loopback port, not started yet.
    fn command(sink: &str) -> Command {
        let mut command = cli();
        command.args([
            "serve",
            "--secret",
            SECRET,
            "--addr",
            "127.0.0.1:0",
            "--sink",
            sink,
        ]);
        command
    }

    fn start(sink: &str, extra: &[&str]) -> Self {
        let mut child = Self::command(sink)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr = line
            .split_once("listening on http://")
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap_or_else(|| panic!("serve did not start: {line:?}"))
            .parse()
            .unwrap();
        // It listens before its sink is open, and answers deliveries 503 until then.
        while !line.contains("the sink is open") {
            line.clear();
            let read = stderr.read_line(&mut line).unwrap();
            assert!(read > 0, "serve did not open its sink");
        }
        // Keep reading, so the child never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { child, addr }
    }

    /// The webhook URL, for `send`.
    fn url(&self) -> String {
        format!("http://{}{}", self.addr, examples::WEBHOOK_PATH)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record `dump --sink` prints, in order.
fn dump(sink: &str) -> Vec<Value> {
    let output = cli().args(["dump", "--sink", sink]).output().unwrap();
    assert!(
        output.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
        .stdout
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .collect()
}

/// A JSON Lines file of records `{"id":i,"v":version(i)}` for `ids`.
fn records_file(path: &Path, ids: std::ops::Range<usize>, version: impl Fn(usize) -> Value) {
    let mut text = String::new();
    for id in ids {
        writeln!(text, "{}", json!({"id": id, "v": version(id)})).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// `send` of `file` to every replica at the same time, in batches of 100, 4 in flight; each
/// must accept everything.
fn send_to_all(replicas: &[&Serve], file: &Path) {
    let senders: Vec<Child> = replicas
        .iter()
        .map(|replica| {
            cli()
                .args(["send", "--url", &replica.url(), "--secret", SECRET])
                .args(["--batch-size", "100", "--concurrency", "4"])
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for sender in senders {
        let output = sender.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "send: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Sends one inline command to `redis` and reads its one-line answer (with its CRLF).
fn redis_command(redis: &RedisServer, command: &str) -> Vec<u8> {
    let client = std::net::TcpStream::connect(redis.url().trim_start_matches("redis://")).unwrap();
    std::io::Write::write_all(&mut &client, format!("{command}\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    BufReader::new(&client)
        .read_until(b'\n', &mut answer)
        .unwrap();
    answer
}

/// The `id` of each dumped record.
fn ids(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|record| record["fields"]["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_receiver_killed_mid_load_keeps_each_acknowledged_record_exactly_once() {
    const BATCHES: usize = 100;
    const SIZE: usize = 100;
    const KILL_AFTER: usize = 30;
    let dir = scratch("crash");
    let sink = format!("sqlite:{}", dir.join("records.db").display());
    let batch = |n: usize| {
        let delivery = Delivery::new().sync(SYNC_ID, "crash").secret(SECRET);
        (0..SIZE).fold(delivery, |delivery, i| {
            delivery.record_json(json!({"id": n * SIZE + i, "batch": n}))
        })
    };

    let mut serve = Serve::start(&sink, &[]);
    let (addr, pid) = (serve.addr, serve.child.id());
    let queue = Arc::new(Mutex::new((0..BATCHES).collect::<VecDeque<_>>()));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (queue, acked) = (Arc::clone(&queue), Arc::clone(&acked));
        workers.spawn(async move {
            loop {
                let Some(n) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let reply = try_send(addr, encoded(addr, batch(n).encode())).await;
                if reply.is_none_or(|reply| reply.status != StatusCode::OK) {
                    return; // Not acknowledged: sent again after the restart.
                }
                let mut acked = acked.lock().unwrap();
                acked.insert(n);
                if acked.len() == KILL_AFTER {
                    // The other workers' batches are in flight right now.
                    let pid = rustix::process::Pid::from_raw(pid.try_into().unwrap()).unwrap();
                    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
                }
            }
        });
    }
    workers.join_all().await;
    serve.child.wait().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        (KILL_AFTER..BATCHES).contains(&acked.len()),
        "killed mid-load: {} of {BATCHES} acknowledged",
        acked.len()
    );

    let serve = Serve::start(&sink, &[]);
    for n in (0..BATCHES).filter(|n| !acked.contains(n)) {
        let reply = try_send(serve.addr, encoded(serve.addr, batch(n).encode()))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.json()["accepted"], SIZE);
    }

    let stored = ids(&dump(&sink));
    assert_eq!(stored.len(), BATCHES * SIZE, "each record exactly once");
    let distinct: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(distinct.len(), BATCHES * SIZE, "no record twice");
    for n in &acked {
        let first = u64::try_from(n * SIZE).unwrap();
        assert!(distinct.contains(&first), "acknowledged batch {n} was lost");
    }
}

/// Fills the sink file at `path` (set up by the sink) with `records` records of a sync `s`, in
/// rows of 10,000 (batches as the sink stores them), written straight in the sink's layout in
/// one transaction: much cheaper than storing them. Every row holds the same records (`dump`
/// does not mind), so the text is built once.
fn fill_sink_file(path: &Path, records: usize) {
    const ROW: usize = 10_000;
    let mut row = String::from("[");
    for n in 0..ROW {
        let comma = if n == 0 { "" } else { "," };
        write!(row, r#"{comma}[null,"h{n}",{{}}]"#).unwrap();
    }
    row.push(']');
    let mut connection = rusqlite::Connection::open(path).unwrap();
    let transaction = connection.transaction().unwrap();
    {
        let mut insert = transaction
            .prepare("INSERT INTO batches (sync_id, sync_name, records) VALUES ('s', 'n', ?1)")
            .unwrap();
        for _ in 0..records / ROW {
            insert.execute([&row]).unwrap();
        }
    }
    transaction.commit().unwrap();
}

/// A number from a `NAME: NUMBER` line of the file `/proc/PID/FILE`.
fn proc_figure(pid: u32, file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/{file}"))
}

/// `dump` of the sink file at `path`, which holds `records` records: the bytes it had read
/// when its first line came out, and its peak resident memory once it had printed all but
/// its last 20,000 lines (so it has read nearly the whole file, and is still running).
fn measured_dump(path: &Path, records: usize) -> (u64, u64) {
    let mut child = cli()
        .args(["dump", "--sink", &format!("sqlite:{}", path.display())])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = Vec::new();
    let mut lines = 0;
    let (mut read_at_first_line, mut peak) = (0, 0);
    while out.read_until(b'\n', &mut line).unwrap() > 0 {
        lines += 1;
        if lines == 1 {
            read_at_first_line = proc_figure(pid, "io", "rchar");
        }
        if lines == records - 20_000 {
            peak = proc_figure(pid, "status", "VmHWM") * 1024;
        }
        line.clear();
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(lines, records);
    (read_at_first_line, peak)
}

/// `dump` reads a page at a time: its peak memory for 1 M records is within 16 MiB of its
/// peak for 100 k, and its first line comes out when it has read a small part of the file.
#[tokio::test]
async fn dump_prints_its_first_line_early_and_its_memory_does_not_grow_with_the_sink() {
    let dir = scratch("dump-memory");
    let files = [
        (dir.join("small.db"), 100_000),
        (dir.join("large.db"), 1_000_000),
    ];
    for (path, _) in &files {
        let sink = SqliteSink::open(path, Identity::hash(), Durability::Process).await;
        drop(sink.unwrap());
    }
    // Side by side: the two take the time of the larger.
    let [(_, small_peak), (read_at_first_line, large_peak)] = std::thread::scope(|scope| {
        files
            .each_ref()
            .map(|(path, records)| {
                scope.spawn(move || {
                    fill_sink_file(path, *records);
                    measured_dump(path, *records)
                })
            })
            .map(|measuring| measuring.join().unwrap())
    });
    let mib = |bytes: u64| bytes >> 20;
    assert!(
        large_peak < small_peak + (16 << 20),
        "peak {} MiB for 1 M records, {} MiB for 100 k",
        mib(large_peak),
        mib(small_peak)
    );
    let file = std::fs::metadata(&files[1].0).unwrap().len();
    assert!(
        read_at_first_line < file / 4,
        "{read_at_first_line} bytes read before the first line, of {file}"
    );
}

/// Another application's SQLite file is refused by `serve` at start and by `dump`, and
/// neither changes a byte of it nor starts a WAL beside it.
#[test]
fn serve_and_dump_refuse_another_applications_file_and_leave_it_as_it_was() {
    let dir = scratch("foreign");
    let path = dir.join("app.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);")
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let sink = format!("sqlite:{}", path.display());
    for mut command in [Serve::command(&sink), cli()] {
        if command.get_args().next().is_none() {
            command.args(["dump", "--sink", &sink]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A `serve` that took the file would run until stopped.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{command:?} took another application's file");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("another application"), "{stderr}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    for beside in ["db-wal", "db-shm"] {
        assert!(!path.with_extension(beside).exists(), "{beside}");
    }
}

#[test]
fn two_replicas_sharing_one_redis_store_each_record_once_per_change() {
    let Some(redis) = RedisServer::start("two_replicas_sharing_one_redis") else {
        return;
    };
    let dir = scratch("replicas");
    let (a, b) = (
        Serve::start(&redis.url(), &[]),
        Serve::start(&redis.url(), &[]),
    );
    let all = dir.join("all.jsonl");
    records_file(&all, 0..10_000, |_| json!(0));

    send_to_all(&[&a, &b], &all);
    send_to_all(&[&a, &b], &all);
    assert_eq!(dump(&redis.url()).len(), 10_000);

    let changed = dir.join("changed.jsonl");
    records_file(&changed, 0..10_000, |id| json!(u8::from(id < 1_000)));
    send_to_all(&[&a, &b], &changed);
    let records = dump(&redis.url());
    assert_eq!(records.len(), 11_000);
    let changes = records.iter().filter(|record| record["fields"]["v"] == 1);
    assert_eq!(changes.count(), 1_000);

    // By key: A → B → A is three stored states (by hash alone, the return to A is not).
    let keyed_sink = format!("{}?stream=keyed", redis.url());
    let keyed = Serve::start(&keyed_sink, &["--key-field", "id"]);
    let one = dir.join("one.jsonl");
    for state in ["A", "B", "A"] {
        records_file(&one, 7..8, |_| json!(state));
        send_to_all(&[&keyed], &one);
    }
    let states: Vec<Value> = dump(&keyed_sink)
        .into_iter()
        .map(|record| {
            assert_eq!(record["key"], 7);
            record["fields"]["v"].clone()
        })
        .collect();
    assert_eq!(states, ["A", "B", "A"]);
    assert_eq!(dump(&redis.url()).len(), 11_000, "streams are separate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_503_sink_unavailable_and_not_ready_and_recovers_without_a_restart()
{
    let Some(mut redis) = RedisServer::start("an_unreachable_redis") else {
        return;
    };
    let serve = Serve::start(&redis.url(), &[]);
    let addr = serve.addr;
    let delivery = |marker: &str| {
        let delivery = Delivery::new().sync(SYNC_ID, "outage").secret(SECRET);
        encoded(
            addr,
            delivery.record_json(json!({"marker": marker})).encode(),
        )
    };
    let reply = send(addr, delivery("before")).await;
    assert_eq!(
        reply.json(),
        json!({"accepted": 1, "stored": 1, "unchanged": 0, "superseded": 0})
    );
    assert_eq!(get(addr, "/readyz").await.status, StatusCode::OK);

    redis.stop();
    let reply = send(addr, delivery("during-outage")).await;
    reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "sink_unavailable");
    assert!(!String::from_utf8_lossy(&reply.body).contains("during-outage"));
    readyz_becomes(addr, StatusCode::SERVICE_UNAVAILABLE)
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready");

    // Back, empty (it keeps nothing): the same receiver process stores again. Reconnecting
    // may take a retry or two; a generous bound only says "at all".
    redis.restart();
    let started = Instant::now();
    loop {
        let reply = send(addr, delivery("after")).await;
        if reply.status == StatusCode::OK {
            break;
        }
        reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "sink_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no recovery without a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    readyz_becomes(addr, StatusCode::OK).await;
    let markers: Vec<Value> = dump(&redis.url())
        .into_iter()
        .map(|record| record["fields"]["marker"].clone())
        .collect();
    assert_eq!(markers, ["after"], "the refused batch was not kept");
}

#[tokio::test]
async fn redis_sink_passes_the_shared_suite() {
    let Some(redis) = RedisServer::start("redis_sink_passes_the_shared_suite") else {
        return;
    };
    let url = redis.url();
    check_sink(|identity| {
        let url = url.clone();
        async move {
            RedisSink::connect(&url, "suite", identity, None)
                .await
                .unwrap()
        }
    })
    .await;
}

#[tokio::test]
async fn redis_hash_identities_expire_after_the_ttl_and_keys_do_not() {
    use polytomic_webhook_store::Sink as _;
    use polytomic_webhook_store::testing::{batch, fresh_sync_id};

    let Some(redis) = RedisServer::start("redis_hash_identities_expire") else {
        return;
    };
    let ttl = Some(Duration::from_millis(200));
    let by_hash = RedisSink::connect(&redis.url(), "ttl", Identity::hash(), ttl)
        .await
        .unwrap();
    let by_id = RedisSink::connect(&redis.url(), "ttl", Identity::key_field("id"), ttl)
        .await
        .unwrap();
    let sync = fresh_sync_id();
    let hashed = batch(&sync, &[("h", r#"{"n":1}"#)]);
    let keyed = batch(&sync, &[("k", r#"{"id":1}"#)]);
    assert_eq!(by_hash.store(&hashed).await.unwrap().stored, 1);
    assert_eq!(by_id.store(&keyed).await.unwrap().stored, 1);
    assert_eq!(by_hash.store(&hashed).await.unwrap().unchanged, 1);
    // Past the TTL (not a speed check: only "later than").
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(by_hash.store(&hashed).await.unwrap().stored, 1);
    assert_eq!(by_id.store(&keyed).await.unwrap().unchanged, 1);
}

#[tokio::test]
async fn redis_hash_identities_survive_turning_the_ttl_on_or_off() {
    use polytomic_webhook_store::Sink as _;
    use polytomic_webhook_store::testing::{batch, fresh_sync_id};

    let Some(redis) = RedisServer::start("redis_ttl_on_or_off") else {
        return;
    };
    let url = redis.url();
    let sink = |ttl| RedisSink::connect(&url, "switch", Identity::hash(), ttl);
    let forever = sink(None).await.unwrap();
    let expiring = sink(Some(Duration::from_secs(3600))).await.unwrap();
    let sync = fresh_sync_id();
    let before = batch(&sync, &[("kept-without-ttl", r#"{"n":1}"#)]);
    let after = batch(&sync, &[("kept-with-ttl", r#"{"n":2}"#)]);
    assert_eq!(forever.store(&before).await.unwrap().stored, 1);
    // Stored without a TTL (in the identity hash), known once a TTL is set...
    assert_eq!(expiring.store(&before).await.unwrap().unchanged, 1);
    assert_eq!(expiring.store(&after).await.unwrap().stored, 1);
    // ...and stored with one (in the sorted set), known once it is unset again.
    assert_eq!(forever.store(&after).await.unwrap().unchanged, 1);
    assert_eq!(forever.records().await.unwrap().len(), 2);
    // Where each went: without a TTL the identity hash holds `#HASH`, with one the sorted set.
    let key = format!("switch:{{{sync}}}");
    assert_eq!(
        redis_command(&redis, &format!("HEXISTS {key}:last #kept-without-ttl")),
        b":1\r\n"
    );
    assert_eq!(
        redis_command(&redis, &format!("ZSCORE {key}:hashes kept-without-ttl")),
        b"$-1\r\n"
    );
    assert_eq!(
        redis_command(&redis, &format!("HEXISTS {key}:last #kept-with-ttl")),
        b":0\r\n"
    );

    // One stored with a TTL that has run out is stored again with the TTL turned off.
    let brief = sink(Some(Duration::from_millis(50))).await.unwrap();
    let expiring = batch(&sync, &[("brief", r#"{"n":3}"#)]);
    assert_eq!(brief.store(&expiring).await.unwrap().stored, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(forever.store(&expiring).await.unwrap().stored, 1);
    assert_eq!(forever.store(&expiring).await.unwrap().unchanged, 1);
}

/// Without a TTL, hash identities live in the identity hash only: no sorted set is made.
#[tokio::test]
async fn redis_hash_identities_without_a_ttl_make_no_sorted_set() {
    use polytomic_webhook_store::Sink as _;
    use polytomic_webhook_store::testing::{batch, fresh_sync_id};

    let Some(redis) = RedisServer::start("redis_no_sorted_set") else {
        return;
    };
    let sink = RedisSink::connect(&redis.url(), "plain", Identity::hash(), None)
        .await
        .unwrap();
    let sync = fresh_sync_id();
    let one = batch(&sync, &[("h1", r#"{"n":1}"#), ("h2", r#"{"n":2}"#)]);
    assert_eq!(sink.store(&one).await.unwrap().stored, 2);
    assert_eq!(sink.store(&one).await.unwrap().unchanged, 2);
    let key = format!("plain:{{{sync}}}");
    assert_eq!(
        redis_command(&redis, &format!("EXISTS {key}:hashes")),
        b":0\r\n"
    );
    assert_eq!(
        redis_command(&redis, &format!("HLEN {key}:last")),
        b":2\r\n"
    );
}

#[tokio::test]
async fn a_redis_script_that_fails_leaves_nothing_of_the_batch() {
    use polytomic_webhook_store::Sink as _;
    use polytomic_webhook_store::testing::{batch, fresh_sync_id};

    let Some(redis) = RedisServer::start("a_redis_script_that_fails") else {
        return;
    };
    let sink = RedisSink::connect(&redis.url(), "broken", Identity::key_field("id"), None)
        .await
        .unwrap();
    let sync = fresh_sync_id();
    // The sync's last-hash key holds a string, so the script's first read of it fails, before
    // anything is written.
    let answer = redis_command(&redis, &format!("SET broken:{{{sync}}}:last oops"));
    assert_eq!(answer, b"+OK\r\n");

    let doomed = batch(&sync, &[("h1", r#"{"n":1}"#), ("h2", r#"{"id":2}"#)]);
    let error = sink.store(&doomed).await.unwrap_err();
    assert!(
        !error.to_string().contains(r#""n""#),
        "no record value: {error}"
    );
    assert!(
        sink.records().await.unwrap().is_empty(),
        "the first record was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_redis_ttl_lets_hash_identities_expire_and_is_refused_for_sqlite() {
    let Some(redis) = RedisServer::start("serve_redis_ttl") else {
        return;
    };
    let sink = format!("{}?stream=ttl", redis.url());
    let serve = Serve::start(&sink, &["--redis-ttl", "1"]);
    let addr = serve.addr;
    let delivery = || {
        let delivery = Delivery::new().sync(SYNC_ID, "ttl").secret(SECRET);
        encoded(addr, delivery.record_json(json!({"n": 1})).encode())
    };
    let stored = |reply: Reply| {
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.json()["stored"].clone()
    };
    assert_eq!(stored(send(addr, delivery()).await), 1);

    // The hash identity carries an expiry (a finite score), not "never" (+inf).
    let answer = redis_command(&redis, &format!("ZCOUNT ttl:{{{SYNC_ID}}}:hashes 0 (+inf"));
    assert_eq!(answer, b":1\r\n");

    // Past the TTL (not a speed check: only "later than"), the same record is stored again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(stored(send(addr, delivery()).await), 1);
    assert_eq!(dump(&sink).len(), 2);

    let dir = scratch("ttl-sqlite");
    let output = Serve::command(&format!("sqlite:{}", dir.join("records.db").display()))
        .args(["--redis-ttl", "5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--redis-ttl applies to redis://"));
}

/// `StoreService` behind the layer: each batch it acknowledges counts its records in
/// `records_total`, and what the sink did with them in `sink_records_total`.
#[tokio::test]
async fn deliveries_stored_by_store_service_count_their_records_and_what_the_sink_did() {
    use axum::Router;
    use polytomic_webhook::metrics::prometheus_recorder;
    use polytomic_webhook::testing::prometheus_value;
    use polytomic_webhook_store::{MemorySink, StoreService};
    use tower::ServiceExt as _;

    let recorder = prometheus_recorder();
    // The test runtime has one thread, so every poll sees this recorder.
    let _installed = metrics::set_default_local_recorder(&recorder);
    let sink = Arc::new(MemorySink::new(Identity::key_field("id")));
    let app = Router::new()
        .route_service("/", StoreService::new(sink))
        .route_layer(layer(config()));
    // Key 7 twice: its first record is superseded; the same batch again stores nothing.
    let updated_twice = Delivery::new()
        .secret(SECRET)
        .record_json(json!({"id": 7, "v": 1}))
        .record_json(json!({"id": 7, "v": 2}))
        .record_json(json!({"id": 8}));
    for _ in 0..2 {
        let answer = app.clone().oneshot(updated_twice.clone().build()).await;
        assert_eq!(answer.unwrap().status(), StatusCode::OK);
    }
    let text = recorder.handle().render();
    let value = |series: &str| prometheus_value(&text, series);
    assert_eq!(
        value(r#"polytomic_webhook_records_total{result="accepted"}"#),
        Some(6.0),
        "{text}"
    );
    for (result, records) in [("stored", 2.0), ("unchanged", 2.0), ("superseded", 2.0)] {
        assert_eq!(
            value(&format!(
                "polytomic_webhook_sink_records_total{{result=\"{result}\"}}"
            )),
            Some(records),
            "{result} in\n{text}"
        );
    }
}
