//! The `receiver` example binary itself, started as a child process, as other tools drive it:
//! one JSON line on stdout per accepted delivery, none for refused ones, logs on stderr, and a
//! clean exit on SIGTERM.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
#![cfg(unix)] // It stops the child with SIGTERM.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, StatusCode, Version};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The child process, killed if the test fails before it exits.
struct Receiver {
    child: Child,
    addr: SocketAddr,
    /// Where `/metrics` is served when `POLYTOMIC_WEBHOOK_METRICS_ADDR` moved it.
    metrics_addr: Option<SocketAddr>,
    stderr: mpsc::Receiver<String>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver example with `secret`, on a free port, stdout and stderr piped; adjust it before
/// [`Receiver::spawn`].
fn receiver_command(secret: &str) -> Command {
    receiver_command_in(Command::new(example_binary("receiver")), secret)
}

/// `command`, which runs the receiver (through a wrapper, say), set up as [`receiver_command`].
fn receiver_command_in(mut command: Command, secret: &str) -> Command {
    command
        .env("POLYTOMIC_WEBHOOK_SECRET", secret)
        .env_remove("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET")
        .env_remove("POLYTOMIC_EVENTS_SECRET")
        .env_remove("POLYTOMIC_EVENTS_PREVIOUS_SECRET")
        .env_remove("POLYTOMIC_EVENTS_REDIS_URL")
        .env_remove("POLYTOMIC_EVENTS_STORE")
        // Port 0: the receiver picks a free port and logs it, so there is no race for one.
        .env("POLYTOMIC_WEBHOOK_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

impl Receiver {
    fn start(secret: &str) -> Self {
        Self::spawn(&mut receiver_command(secret))
    }

    fn spawn(command: &mut Command) -> Self {
        let mut child = command.spawn().unwrap();
        let (lines, stderr) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().unwrap());
        let stderr_reader = std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let url_addr = |line: &str, before: &str| -> Option<SocketAddr> {
            let rest = line.split(before).nth(1)?;
            Some(rest.split('/').next().unwrap().parse().unwrap())
        };
        let mut metrics_addr = None;
        let addr = loop {
            let line = stderr
                .recv_timeout(Duration::from_secs(60))
                .expect("the receiver logs where it listens");
            metrics_addr = metrics_addr.or_else(|| url_addr(&line, "metrics on http://"));
            if let Some(addr) = url_addr(&line, "listening on http://") {
                break addr;
            }
        };
        Self {
            child,
            addr,
            metrics_addr,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Sends SIGTERM.
    fn sigterm(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id().try_into().unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Sends SIGTERM, waits for a clean exit, and returns everything written to stdout and the
    /// rest of stderr.
    fn terminate(self) -> (String, Vec<String>) {
        self.sigterm();
        self.wait()
    }

    /// Waits for a clean exit, and returns everything written to stdout and the rest of stderr.
    fn wait(mut self) -> (String, Vec<String>) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit after SIGTERM: {status}");
        let mut stdout = String::new();
        // None when stdout went to a file.
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        }
        // The child has exited, so its stderr ends: the reader finishes.
        self.stderr_reader.take().unwrap().join().unwrap();
        let stderr = self.stderr.try_iter().collect();
        (stdout, stderr)
    }
}

#[tokio::test]
async fn the_receiver_prints_one_line_per_accepted_delivery_and_nothing_else() {
    // Two secrets, as while rotating: both are accepted.
    let receiver = Receiver::spawn(
        receiver_command(SECRET).env("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET", "previous-secret"),
    );
    let addr = receiver.addr;

    let health = Request::get("/healthz")
        .header("host", addr.to_string())
        .body(full(""))
        .unwrap();
    assert_eq!(send(addr, health).await.status, StatusCode::OK);

    // Accepted: gzip without and with Content-Encoding, identity, HTTP/2, the other secret.
    send(addr, sample(addr, Version::HTTP_11))
        .await
        .assert_accepted(2);
    let coded = request(
        addr,
        Version::HTTP_11,
        full(gzip(&sample_body())),
        gzip_coded,
    );
    send(addr, coded).await.assert_accepted(2);
    let identity = request(addr, Version::HTTP_11, full(sample_body()), |_| {});
    send(addr, identity).await.assert_accepted(2);
    send(addr, sample(addr, Version::HTTP_2))
        .await
        .assert_accepted(2);
    let rotated = request(
        addr,
        Version::HTTP_11,
        full(gzip(&sample_body())),
        |headers| {
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_static("Bearer previous-secret"),
            );
        },
    );
    send(addr, rotated).await.assert_accepted(2);
    let accepted = 5;

    // Refused, or acknowledged without the handler: no line.
    let wrong = request(
        addr,
        Version::HTTP_11,
        full(gzip(&sample_body())),
        |headers| {
            headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        },
    );
    send(addr, wrong)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    let stale = request(
        addr,
        Version::HTTP_11,
        full(gzip(&sample_body())),
        |headers| {
            headers.insert(
                "polytomic-signature-timestamp",
                timestamp(-10 * 60).parse().unwrap(),
            );
        },
    );
    send(addr, stale)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "timestamp_too_old");
    let malformed = request(addr, Version::HTTP_11, full(gzip(b"{\"event\":")), |_| {});
    send(addr, malformed)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_json");
    let unknown = full(gzip(br#"{"event":"sync.something_new","object":{}}"#));
    let reply = send(addr, request(addr, Version::HTTP_11, unknown, |_| {})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["ignored_event"], "sync.something_new");

    let (stdout, stderr) = receiver.terminate();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), accepted, "stdout:\n{stdout}");
    let expected = serde_json::json!({
        "id": SYNC_ID,
        "name": "Webhook HTTP Endpoint sync",
        "records": [
            {"hash": "b7421c6c57bd49f7",
             "fields": {"email": "nathan@polytomic.com", "last_login": "2020-12-02T00:00:00Z"}},
            {"hash": "0c1d2e3f4a5b6c7d",
             "fields": {"email": "ada@example.com", "last_login": null}}
        ],
        "metadata": {"source": "e2e"}
    });
    for line in lines {
        // Compact: one line, no spaces between tokens (the sample has none inside strings).
        assert!(!line.contains(": ") && !line.contains(", "), "{line}");
        let batch: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(batch, expected);
    }

    // One log line per delivery on stderr, carrying the span's fields but never the secret.
    let accepted_logs: Vec<&String> = stderr
        .iter()
        .filter(|line| {
            line.contains("polytomic_webhook.delivery") && line.contains("outcome=\"accepted\"")
        })
        .collect();
    assert_eq!(accepted_logs.len(), accepted, "{stderr:#?}");
    let line = accepted_logs[0];
    for field in [
        "method=POST",
        "path=/webhooks/polytomic",
        &format!("sync_id=\"{SYNC_ID}\""),
        "sync_name=\"Webhook HTTP Endpoint sync\"",
        "record_count=2",
        "content_coding=\"gzip\"",
        "compressed_bytes=",
        "decompressed_bytes=",
        "status=200",
        "outcome=\"accepted\"",
        "latency_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    let rejected = stderr
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("polytomic_webhook.delivery"))
        .count();
    assert_eq!(rejected, 3, "{stderr:#?}");
    assert!(!stderr.iter().any(|line| line.contains(SECRET)));
    assert!(
        !stderr
            .iter()
            .any(|line| line.contains("nathan@polytomic.com"))
    );
}

/// SIGTERM the moment the receiver says where it listens: it exits cleanly, because its signal
/// handlers were installed before that line. Installed later, a signal in between met the
/// default action, which ends the process at once and resets its connections.
#[test]
fn sigterm_right_after_the_listening_line_is_a_clean_exit() {
    for _ in 0..5 {
        // `terminate` asserts a successful exit, not death by the signal.
        Receiver::start(SECRET).terminate();
    }
}

/// SIGTERM while a delivery is half sent: the receiver finishes it (answer and stdout line),
/// then exits cleanly. `Expect: 100-continue` tells when the handler has started reading the
/// body, so the signal provably arrives mid-request.
#[tokio::test]
async fn sigterm_lets_the_delivery_in_flight_finish() {
    let receiver = Receiver::start(SECRET);
    let body = gzip(&sample_body());
    let mut stream = TcpStream::connect(receiver.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {SECRET}\r\nPolytomic-Signature-Timestamp: {}\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        examples::WEBHOOK_PATH,
        receiver.addr,
        now(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        interim.push(stream.read_u8().await.unwrap());
    }
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue"), "{interim:?}");

    receiver.sigterm();
    stream.write_all(&body).await.unwrap();
    // The server closes the connection after this last response.
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(r#"{"accepted":2}"#), "{response}");

    let (stdout, _) = receiver.wait();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let batch: serde_json::Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(batch["id"], SYNC_ID);
    assert_eq!(batch["records"].as_array().unwrap().len(), 2);
}

/// A delivery with `Authorization: Bearer {token}`, answered by the receiver at `addr`.
async fn send_with_token(addr: SocketAddr, token: &str) -> Reply {
    let authorization = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let delivery = request(
        addr,
        Version::HTTP_11,
        full(gzip(&sample_body())),
        |headers| {
            headers.insert(AUTHORIZATION, authorization);
        },
    );
    send(addr, delivery).await
}

/// `POLYTOMIC_WEBHOOK_SECRET` is one secret even with a comma in it; the previous secret of a
/// rotation has a variable of its own.
#[tokio::test]
async fn a_comma_is_part_of_the_secret_and_the_previous_secret_has_its_own_variable() {
    let receiver = Receiver::spawn(
        receiver_command("alpha,beta").env("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET", SECRET),
    );
    let addr = receiver.addr;
    for token in ["alpha", "beta"] {
        send_with_token(addr, token)
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    send_with_token(addr, "alpha,beta").await.assert_accepted(2);
    send_with_token(addr, SECRET).await.assert_accepted(2);
    let (stdout, _) = receiver.terminate();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}

/// Stdout on a full device: the batch cannot be printed, so it is answered 503
/// `batch_not_stored` rather than acknowledged, and the receiver keeps running.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_batch_it_cannot_print_is_answered_503_batch_not_stored() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let receiver = Receiver::spawn(receiver_command(SECRET).stdout(full));
    for _ in 0..2 {
        send(receiver.addr, sample(receiver.addr, Version::HTTP_11))
            .await
            .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "batch_not_stored");
    }
}

/// [`SYNC_ID`]'s batch as senders indent it: two spaces and LF (Python's
/// `json.dumps(indent=2)`, Go's `json.MarshalIndent`), CRLF line ends, tabs; and the one line
/// each must become, its number (no float holds it) and strings byte for byte.
fn indented_bodies() -> ([String; 3], String) {
    let pretty = "{\n  \"event\": \"sync.records\",\n  \"object\": {\n    \"id\": \"SYNC\",\n    \
        \"name\": \"Indented  sync\",\n    \"records\": [\n      {\n        \"hash\": \"h1\",\n        \
        \"fields\": {\n          \"email\": \"ada@example.com\",\n          \
        \"big\": 123456789012345678901234567890\n        }\n      }\n    ],\n    \
        \"metadata\": {\n      \"source\": \"e2e\"\n    }\n  }\n}\n"
        .replace("SYNC", SYNC_ID);
    let line = format!(
        "{{\"id\":\"{SYNC_ID}\",\"name\":\"Indented  sync\",\"records\":[{{\"hash\":\"h1\",\
         \"fields\":{{\"email\":\"ada@example.com\",\"big\":123456789012345678901234567890}}}}],\
         \"metadata\":{{\"source\":\"e2e\"}}}}"
    );
    let tabs: String = pretty
        .lines()
        .map(|text| {
            let body = text.trim_start_matches(' ');
            format!("{}{body}\n", "\t".repeat((text.len() - body.len()) / 2))
        })
        .collect();
    ([pretty.replace('\n', "\r\n"), tabs, pretty], line)
}

#[tokio::test]
async fn an_indented_delivery_is_printed_as_one_compact_line() {
    let receiver = Receiver::start(SECRET);
    let (bodies, line) = indented_bodies();
    for body in bodies {
        let request = request(receiver.addr, Version::HTTP_11, full(body), |_| {});
        send(receiver.addr, request).await.assert_accepted(1);
    }
    let (stdout, _) = receiver.terminate();
    assert_eq!(stdout, format!("{line}\n{line}\n{line}\n"));
}

/// A file of the test's own, named `name`, holding `text`, opened for appending as `>>` does.
fn stdout_file(name: &str, text: &str) -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("receiver-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    (path, file)
}

/// Every line of the file at `path` is JSON: the `accepted` ids of the batches in it.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}")))
        .collect()
}

/// A receiver killed while printing a line leaves that line partial (what SIGKILL leaves):
/// the next receiver appending to the file cuts it off before its first line.
#[tokio::test]
async fn a_partial_last_line_in_the_stdout_file_is_cut_off_at_start() {
    let (path, file) = stdout_file("torn", "{\"kept\":1}\n{\"id\":\"half a li");
    let receiver = Receiver::spawn(receiver_command(SECRET).stdout(file));
    send(receiver.addr, sample(receiver.addr, Version::HTTP_11))
        .await
        .assert_accepted(2);
    receiver.terminate();
    let lines = json_lines(&path);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], serde_json::json!({"kept": 1}));
    assert_eq!(lines[1]["id"], SYNC_ID);
    std::fs::remove_file(path).unwrap();
}

/// The file-size limit (`RLIMIT_FSIZE`, SIGXFSZ ignored) stops a write half-way with EFBIG,
/// as a full disk does: that batch is 503 and its part-line cut off, so the batch accepted
/// once there is room again is a line of its own.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_line_a_full_file_stops_half_way_is_cut_off_and_the_next_batch_is_its_own_line() {
    const LIMIT: usize = 4096;
    let (path, file) = stdout_file("fsize", "");
    let mut wrapper = Command::new("sh");
    wrapper
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={LIMIT}:unlimited -- \"$0\""
        ))
        .arg(example_binary("receiver"));
    let receiver = Receiver::spawn(receiver_command_in(wrapper, SECRET).stdout(file));
    let addr = receiver.addr;
    send(addr, sample(addr, Version::HTTP_11))
        .await
        .assert_accepted(2);
    let large = polytomic_webhook::testing::Delivery::new()
        .sync(SYNC_ID, "large")
        .secret(SECRET)
        .record_json(serde_json::json!({"text": "x".repeat(LIMIT)}));
    send(addr, encoded(addr, large.encode()))
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "batch_not_stored");
    let raised = Command::new("prlimit")
        .args([
            "--pid",
            &receiver.child.id().to_string(),
            "--fsize=unlimited",
        ])
        .status()
        .unwrap();
    assert!(raised.success());
    send(addr, sample(addr, Version::HTTP_11))
        .await
        .assert_accepted(2);
    receiver.terminate();
    let lines = json_lines(&path);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|line| line["name"] == "Webhook HTTP Endpoint sync")
    );
    std::fs::remove_file(path).unwrap();
}

/// Half a request head and then nothing: the receiver closes the connection once its
/// header-read timeout has passed, instead of holding it open.
#[tokio::test]
async fn a_connection_that_sent_half_its_headers_is_closed() {
    let receiver = Receiver::start(SECRET);
    assert_half_a_head_is_cut_off(receiver.addr, "receiver").await;
}

/// When this binary's events were created: its start, in whole seconds (as the printed line
/// has it), fresh enough for the route's age window.
static CREATED_AT: std::sync::LazyLock<chrono::DateTime<chrono::Utc>> =
    std::sync::LazyLock::new(|| {
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap()
    });

/// A signed organisation event to the events route.
fn event(addr: SocketAddr, id: &str, secret: &str) -> Request<ClientBody> {
    let delivery = polytomic_webhook::testing::EventDelivery::new("sync.completed")
        .id(id)
        .organization_id("org-7")
        .created_at(*CREATED_AT)
        .counts(3, 2, 1)
        .secret(secret)
        .gzip(true);
    encoded_to(addr, examples::EVENTS_PATH, delivery.encode())
}

#[tokio::test]
async fn without_its_secret_the_events_route_is_off_and_says_so() {
    let receiver = Receiver::start(SECRET);
    let reply = send(receiver.addr, event(receiver.addr, "evt-1", "any-secret")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let (stdout, stderr) = receiver.terminate();
    assert_eq!(stdout, "");
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("POLYTOMIC_EVENTS_SECRET is not set")),
        "{stderr:#?}"
    );
}

#[tokio::test]
async fn the_events_route_prints_each_new_event_once() {
    let receiver = Receiver::spawn(
        receiver_command(SECRET)
            .env("POLYTOMIC_EVENTS_SECRET", "events-current")
            .env("POLYTOMIC_EVENTS_PREVIOUS_SECRET", "events-previous"),
    );
    let addr = receiver.addr;
    // The first try and five retries of one event; then another one, under the previous secret.
    for _ in 0..6 {
        let reply = send(addr, event(addr, "evt-1", "events-current")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    let reply = send(addr, event(addr, "evt-2", "events-previous")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    send(addr, event(addr, "evt-3", "not-the-secret"))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_signature");

    let (stdout, _) = receiver.terminate();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "stdout:\n{stdout}");
    assert_eq!(
        lines[0],
        serde_json::json!({
            "event_id": "evt-1",
            "type": "sync.completed",
            "organization_id": "org-7",
            "created_at": CREATED_AT.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "payload": {"total_records": 3, "inserted_records": 2, "updated_records": 1},
        })
    );
    assert_eq!(lines[1]["event_id"], "evt-2");
}

#[tokio::test]
async fn the_events_limits_and_window_are_set_by_their_variables() {
    use polytomic_webhook::testing::EventDelivery;

    let receiver = Receiver::spawn(
        receiver_command(SECRET)
            .env("POLYTOMIC_EVENTS_SECRET", "events-current")
            .env("POLYTOMIC_EVENTS_MAX_RECEIVED_BYTES", "2000")
            .env("POLYTOMIC_EVENTS_MAX_AGE_SECS", "60"),
    );
    let addr = receiver.addr;
    let signed = |delivery: EventDelivery| {
        encoded_to(
            addr,
            examples::EVENTS_PATH,
            delivery.secret("events-current").encode(),
        )
    };
    let two_minutes_old = EventDelivery::new("sync.running")
        .created_at(chrono::Utc::now() - chrono::TimeDelta::minutes(2));
    send(addr, signed(two_minutes_old))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "stale_event");
    let large =
        EventDelivery::new("sync.failed").payload(serde_json::json!({"error": "x".repeat(2000)}));
    send(addr, signed(large))
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let reply = send(addr, signed(EventDelivery::new("sync.running"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let (stdout, _) = receiver.terminate();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

/// Sends the event to `addr`, sending it again while the answer is 409 `event_in_progress`
/// (another replica holds it), as Polytomic would; returns the final status.
async fn deliver_event(addr: SocketAddr, id: &str) -> StatusCode {
    // A generous bound for "answered at all": the holder's handler only prints a line.
    for _ in 0..100 {
        let reply = send(addr, event(addr, id, "events-current")).await;
        if reply.status != StatusCode::CONFLICT {
            return reply.status;
        }
        reply.assert_problem(StatusCode::CONFLICT, "event_in_progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} stayed in progress");
}

/// Issue 16's "done when": the first try and five retries of one event, spread over two
/// replicas sharing one Redis, two of them at the same time, reach the handler once.
#[tokio::test]
async fn two_replicas_sharing_redis_print_an_event_delivered_six_times_once() {
    let Some(redis) = RedisServer::start("two_replicas_sharing_redis_print_an_event_once") else {
        return;
    };
    let replica = || {
        Receiver::spawn(
            receiver_command(SECRET)
                .env("POLYTOMIC_EVENTS_SECRET", "events-current")
                .env("POLYTOMIC_EVENTS_REDIS_URL", redis.url()),
        )
    };
    let (one, two) = (replica(), replica());
    // The first try and a retry at the same time, one on each replica.
    let (first, second) = tokio::join!(
        deliver_event(one.addr, "evt-shared"),
        deliver_event(two.addr, "evt-shared")
    );
    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));
    // The other four retries, alternating.
    for addr in [one.addr, two.addr, one.addr, two.addr] {
        assert_eq!(deliver_event(addr, "evt-shared").await, StatusCode::OK);
    }
    // A different event still goes through, on either replica.
    assert_eq!(deliver_event(two.addr, "evt-other").await, StatusCode::OK);

    let (stdout_one, _) = one.terminate();
    let (stdout_two, _) = two.terminate();
    let lines: Vec<serde_json::Value> = stdout_one
        .lines()
        .chain(stdout_two.lines())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|line| line["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().filter(|id| **id == "evt-shared").count(),
        1,
        "{ids:?}"
    );
    assert_eq!(ids.len(), 2, "{ids:?}");
}

/// Issue 23's "done when": with `POLYTOMIC_EVENTS_STORE=sqlite:PATH`, an event handled before
/// a restart, replayed after it, is answered `{"duplicate":true}` and not printed again.
#[tokio::test]
async fn a_replay_after_a_restart_with_the_sqlite_id_store_is_a_duplicate() {
    let dir = std::env::temp_dir().join(format!("receiver-event-ids-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite:{}", dir.join("event-ids.db").display());
    let start = || {
        Receiver::spawn(
            receiver_command(SECRET)
                .env("POLYTOMIC_EVENTS_SECRET", "events-current")
                .env("POLYTOMIC_EVENTS_STORE", &store),
        )
    };
    let first = start();
    let reply = send(first.addr, event(first.addr, "evt-kept", "events-current")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let (stdout, _) = first.terminate();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let second = start();
    let reply = send(
        second.addr,
        event(second.addr, "evt-kept", "events-current"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json(), serde_json::json!({"duplicate": true}));
    let (stdout, _) = second.terminate();
    assert_eq!(stdout, "");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_are_on_the_webhook_port_unless_their_own_address_is_set() {
    let receiver = Receiver::start(SECRET);
    let addr = receiver.addr;
    send(addr, sample(addr, Version::HTTP_11))
        .await
        .assert_accepted(2);
    let scrape = get(addr, "/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    assert!(
        text.contains(r#"polytomic_webhook_deliveries_total{webhook="batch",outcome="accepted",code="none"} 1"#),
        "{text}"
    );
    assert_eq!(get(addr, "/readyz").await.status, StatusCode::OK);
    receiver.terminate();

    let receiver = Receiver::spawn(
        receiver_command(SECRET).env("POLYTOMIC_WEBHOOK_METRICS_ADDR", "127.0.0.1:0"),
    );
    let metrics_addr = receiver
        .metrics_addr
        .expect("the receiver logs where the metrics are");
    assert_ne!(metrics_addr, receiver.addr);
    let addr = receiver.addr;
    send(addr, sample(addr, Version::HTTP_11))
        .await
        .assert_accepted(2);
    assert_eq!(get(addr, "/metrics").await.status, StatusCode::NOT_FOUND);
    let scrape = get(metrics_addr, "/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&scrape.body)
            .contains(r#"polytomic_webhook_deliveries_total{webhook="batch",outcome="accepted",code="none"} 1"#),
        "{scrape:?}"
    );
    receiver.terminate();
}

/// Peak resident memory of process `pid` so far, in bytes: `VmHWM` in `/proc/<pid>/status`.
#[cfg(target_os = "linux")]
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// The decoded-bytes budget the bomb test gives the receiver.
#[cfg(target_os = "linux")]
const BOMB_TEST_BUDGET: u64 = 64 << 20;

/// What the receiver may use beyond that budget at its peak: the process itself (runtime,
/// logging, metrics: about 10 MiB before any delivery) and what the budget does not see, such
/// as hyper's per-connection read buffers while the 300 bodies stream in, are drained after a
/// refusal, or wait. Measured: under 19 MiB in all, the budget never filled (SECURITY.md).
#[cfg(target_os = "linux")]
const BOMB_TEST_OVERHEAD: u64 = 32 << 20;

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_gzip_bombs_are_all_answered_within_the_decoded_budget() {
    use polytomic_webhook::testing::Delivery;

    let receiver = Receiver::spawn(
        receiver_command(SECRET)
            .env(
                "POLYTOMIC_WEBHOOK_MAX_DECODED_IN_FLIGHT",
                BOMB_TEST_BUDGET.to_string(),
            )
            // One line per refusal would only slow the receiver down here.
            .env("RUST_LOG", "info,polytomic_webhook=error"),
    );
    let addr = receiver.addr;
    let pid = receiver.child.id();
    let before = peak_rss(pid);
    let (headers, bomb) = Delivery::new().secret(SECRET).bomb(1 << 30).encode();
    assert!(bomb.len() < 2 << 20, "{} bytes on the wire", bomb.len());

    let bombs: Vec<_> = (0..300)
        .map(|_| tokio::spawn(send(addr, encoded(addr, (headers.clone(), bomb.clone())))))
        .collect();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for bomb in bombs {
        // `send` panics on a connection error: a reset shows up as a failed task.
        let answer = match bomb.await {
            Ok(reply) => {
                let code = reply.json()["code"].as_str().unwrap_or("-").to_owned();
                format!("{} {code}", reply.status.as_u16())
            }
            Err(error) => format!("no answer: {error}"),
        };
        *answers.entry(answer).or_default() += 1;
    }
    let peak = peak_rss(pid);
    println!(
        "bombs of {} bytes: {answers:?}; receiver peak RSS {:.1} MiB ({:.1} MiB before the bombs)",
        bomb.len(),
        peak as f64 / f64::from(1 << 20),
        before as f64 / f64::from(1 << 20)
    );
    for answer in answers.keys() {
        assert!(
            answer.starts_with("413 ") || answer.starts_with("503 ") || answer.starts_with("408 "),
            "{answers:?}"
        );
    }
    assert!(
        peak < BOMB_TEST_BUDGET + BOMB_TEST_OVERHEAD,
        "peak RSS {peak} bytes, over the budget plus {BOMB_TEST_OVERHEAD}: {answers:?}"
    );
    // Still serving.
    send(addr, sample(addr, Version::HTTP_11))
        .await
        .assert_accepted(2);
    receiver.terminate();
}

/// A delivery whose one record carries `marker` and enough padding that its stdout line nearly
/// fills a pipe's page (PIPE_BUF, 4096 bytes): a pipe takes it whole or not at all.
fn padded(addr: SocketAddr, marker: usize) -> Request<ClientBody> {
    let delivery = polytomic_webhook::testing::Delivery::new()
        .secret(SECRET)
        .record_json(serde_json::json!({"marker": marker, "pad": "x".repeat(3000)}));
    encoded(addr, delivery.encode())
}

/// `request`'s answer and how long it took; panics after `bound`.
async fn answered_within(
    addr: SocketAddr,
    request: Request<ClientBody>,
    bound: Duration,
) -> (Reply, Duration) {
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(bound, send(addr, request))
        .await
        .unwrap_or_else(|_| panic!("not answered within {bound:?}"));
    (reply, started.elapsed())
}

/// A stdout reader that stops reading: once the pipe is full, deliveries are answered 503
/// `batch_not_stored` within `POLYTOMIC_WEBHOOK_OUTPUT_WAIT_MS`, while `/healthz`, `/metrics`
/// and `/readyz` (503) answer within a second; once it reads again, deliveries are 200 again
/// and stdout holds exactly the acknowledged lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_reader_that_stops_reading_gets_503_in_time_and_the_receiver_keeps_answering() {
    const WAIT: Duration = Duration::from_millis(1000);
    const MARGIN: Duration = Duration::from_secs(1);
    let mut receiver = Receiver::spawn(receiver_command(SECRET).env(
        "POLYTOMIC_WEBHOOK_OUTPUT_WAIT_MS",
        WAIT.as_millis().to_string(),
    ));
    let addr = receiver.addr;
    let marker_of = |line: &str| {
        let batch: serde_json::Value = serde_json::from_str(line).unwrap();
        usize::try_from(batch["records"][0]["fields"]["marker"].as_u64().unwrap()).unwrap()
    };

    // Nobody reads stdout: the pipe fills.
    let mut acknowledged = Vec::new();
    let first_refusal = loop {
        let marker = acknowledged.len();
        assert!(marker < 10_000, "the pipe never filled");
        let (reply, took) = answered_within(addr, padded(addr, marker), WAIT + MARGIN).await;
        if reply.status == StatusCode::OK {
            acknowledged.push(marker);
            continue;
        }
        reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "batch_not_stored");
        break took;
    };
    assert!(
        first_refusal >= WAIT,
        "refused before its wait: {first_refusal:?}"
    );

    // Stalled: a delivery every 100 ms, each refused in time, while the operations routes
    // answer within a second.
    let mut refusals = Vec::new();
    for k in 0..10 {
        refusals.push(tokio::spawn(answered_within(
            addr,
            padded(addr, 20_000 + k),
            WAIT + MARGIN,
        )));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    readyz_becomes(addr, StatusCode::SERVICE_UNAVAILABLE).await;
    let mut slowest = Duration::ZERO;
    for (path, status) in [("/healthz", 200), ("/metrics", 200), ("/readyz", 503)] {
        let get = Request::get(path)
            .header("host", addr.to_string())
            .body(full(""))
            .unwrap();
        let (reply, took) = answered_within(addr, get, MARGIN).await;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        slowest = slowest.max(took);
    }
    let mut took = Vec::new();
    for refusal in refusals {
        let (reply, answered) = refusal.await.unwrap();
        reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "batch_not_stored");
        took.push(answered);
    }
    // Figures for the README, not assertions.
    eprintln!(
        "stalled stdout: {} lines fitted; operations routes within {slowest:?}; refusals took \
         {:?}..{:?} (wait {WAIT:?})",
        acknowledged.len(),
        took.iter().min().unwrap(),
        took.iter().max().unwrap(),
    );

    // The reader resumes.
    let mut stdout = receiver.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    readyz_becomes(addr, StatusCode::OK).await;
    for marker in 30_000..30_010 {
        let (reply, _) = answered_within(addr, padded(addr, marker), MARGIN).await;
        reply.assert_accepted(1);
        acknowledged.push(marker);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.terminate();
    let text = reader.join().unwrap();
    assert_eq!(
        text.lines().map(marker_of).collect::<Vec<_>>(),
        acknowledged
    );
}

/// How many unsigned events the Events memory test holds at once: the route's in-flight bound.
#[cfg(target_os = "linux")]
const HELD_EVENTS: usize = 64;

/// The Events route's default received-size limit (`DEFAULT_EVENT_BYTES`).
#[cfg(target_os = "linux")]
const EVENTS_RECEIVED_LIMIT: u64 = 1 << 20;

/// About `len` bytes that gzip shrinks about 80-fold: runs of 300 equal bytes, each followed by
/// one pseudo-random byte. Under the 100:1 ratio limit, so only a size limit stops its inflation.
#[cfg(target_os = "linux")]
fn inflatable(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let mut data = Vec::with_capacity(len + 301);
    while data.len() < len {
        data.extend_from_slice(&[b'a'; 300]);
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        data.push(state.to_le_bytes()[0]);
    }
    data
}

/// Issue 23's "done when": 64 concurrent unsigned gzip events that inflate to 30 MiB, each held
/// one byte short of complete, then completed together, with the decoded budget at 64 MiB:
/// each is answered 401 or 413, and the receiver's peak RSS grows by at most the route's
/// received limit per event plus 64 MiB. (Before, each was buffered, inflated whole and
/// collected to look for a match: 24 of them took the peak up by 1.4 GiB.)
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_events_that_inflate_to_30_mib_cost_at_most_their_received_bytes() {
    use std::sync::Arc;

    use tokio::sync::Barrier;

    let receiver = Receiver::spawn(
        receiver_command(SECRET)
            .env("POLYTOMIC_EVENTS_SECRET", "events-current")
            .env(
                "POLYTOMIC_WEBHOOK_MAX_DECODED_IN_FLIGHT",
                (64u64 << 20).to_string(),
            )
            .env("RUST_LOG", "info,polytomic_webhook=error"),
    );
    let addr = receiver.addr;
    let pid = receiver.child.id();
    let body = Arc::new(gzip(&inflatable(30 << 20)));
    assert!(
        (body.len() as u64) < EVENTS_RECEIVED_LIMIT,
        "{} bytes",
        body.len()
    );
    // A signature in a valid spelling, of these bytes but under another secret.
    let signature = polytomic_webhook::auth::signature::sign_hex("not-the-secret", &body);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Encoding: gzip\r\nPolytomic-Signature: {signature}\r\n\
         Content-Length: {}\r\n\r\n",
        examples::EVENTS_PATH,
        body.len()
    );
    let before = peak_rss(pid);
    let all_held = Arc::new(Barrier::new(HELD_EVENTS + 1));
    let senders: Vec<_> = (0..HELD_EVENTS)
        .map(|_| {
            let (body, head, all_held) = (Arc::clone(&body), head.clone(), Arc::clone(&all_held));
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(head.as_bytes()).await.unwrap();
                let (last, most) = body.split_last().unwrap();
                stream.write_all(most).await.unwrap();
                all_held.wait().await;
                stream.write_all(&[*last]).await.unwrap();
                let mut reply = Vec::new();
                let mut buffer = [0; 4096];
                // The answer is small; read until its JSON body has closed.
                while !reply.ends_with(b"}") {
                    let read = stream.read(&mut buffer).await.unwrap();
                    if read == 0 {
                        break;
                    }
                    reply.extend_from_slice(&buffer[..read]);
                }
                let reply = String::from_utf8_lossy(&reply).into_owned();
                let status = reply.get(9..12).unwrap_or("-").to_owned();
                let code = reply
                    .split("\"code\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("-")
                    .to_owned();
                format!("{status} {code}")
            })
        })
        .collect();
    all_held.wait().await;
    let held = peak_rss(pid);
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for sender in senders {
        *answers.entry(sender.await.unwrap()).or_default() += 1;
    }
    let peak = peak_rss(pid);
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "{HELD_EVENTS} unsigned events of {} bytes (30 MiB decoded): {answers:?}; receiver peak \
         RSS {:.1} MiB before, {:.1} MiB while held, {:.1} MiB after (+{:.1} MiB)",
        body.len(),
        mib(before),
        mib(held),
        mib(peak),
        mib(peak - before)
    );
    for answer in answers.keys() {
        assert!(
            answer.starts_with("401 ") || answer.starts_with("413 "),
            "{answers:?}"
        );
    }
    let bound = EVENTS_RECEIVED_LIMIT * HELD_EVENTS as u64 + (64 << 20);
    assert!(
        peak - before <= bound,
        "peak RSS grew by {} bytes, over {bound}: {answers:?}",
        peak - before
    );
    // Still serving signed events.
    let reply = send(addr, event(addr, "evt-after", "events-current")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    receiver.terminate();
}
