//! The `receiver` example's start-up errors: each names the variable, shows its value (never
//! a secret's), says what was expected and how to fix it, and the process exits 1 without
//! listening.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{SECRET, example_binary};

/// Runs the receiver with `env` and returns its stderr, asserting that it exits with status 1
/// by itself (a generous bound: one that started serving instead would never exit).
fn refuses_to_start(env: &[(&str, &str)]) -> String {
    refuses_to_start_without(env, &[])
}

/// [`refuses_to_start`] with the variables `unset` removed from the environment.
fn refuses_to_start_without(env: &[(&str, &str)], unset: &[&str]) -> String {
    let mut command = Command::new(example_binary("receiver"));
    command
        .env("POLYTOMIC_WEBHOOK_SECRET", SECRET)
        .env_remove("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET")
        .env_remove("POLYTOMIC_EVENTS_SECRET")
        .env_remove("POLYTOMIC_EVENTS_PREVIOUS_SECRET")
        .env_remove("POLYTOMIC_EVENTS_REDIS_URL")
        .env_remove("POLYTOMIC_EVENTS_STORE")
        .env("POLYTOMIC_WEBHOOK_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    for name in unset {
        command.env_remove(name);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the receiver started with {env:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    // A message for people: no Rust debug output.
    assert!(stderr.starts_with("receiver: "), "{stderr}");
    assert!(!stderr.contains("Error: "), "{stderr}");
    stderr
}

fn assert_says(stderr: &str, parts: &[&str]) {
    for part in parts {
        assert!(stderr.contains(part), "{part:?} missing from {stderr}");
    }
}

#[test]
fn a_host_name_for_the_address_is_explained() {
    let stderr = refuses_to_start(&[("POLYTOMIC_WEBHOOK_ADDR", "localhost:3000")]);
    assert_says(
        &stderr,
        &[
            "POLYTOMIC_WEBHOOK_ADDR=\"localhost:3000\" is not an address to listen on",
            "a host name is not looked up",
            "Expected an IP address and a port",
            "Fix: set POLYTOMIC_WEBHOOK_ADDR=127.0.0.1:3000",
        ],
    );
}

#[test]
fn an_address_without_a_port_is_explained() {
    let stderr = refuses_to_start(&[("POLYTOMIC_WEBHOOK_ADDR", "127.0.0.1")]);
    assert_says(
        &stderr,
        &[
            "POLYTOMIC_WEBHOOK_ADDR=\"127.0.0.1\"",
            "the port is missing",
            "Fix: set POLYTOMIC_WEBHOOK_ADDR=127.0.0.1:3000",
        ],
    );
}

#[test]
fn an_address_without_an_ip_is_explained() {
    let stderr = refuses_to_start(&[("POLYTOMIC_WEBHOOK_ADDR", ":3000")]);
    assert_says(
        &stderr,
        &[
            "POLYTOMIC_WEBHOOK_ADDR=\":3000\"",
            "the IP address is missing",
            "Fix: set POLYTOMIC_WEBHOOK_ADDR=127.0.0.1:3000",
        ],
    );
}

#[test]
fn a_busy_port_is_explained() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = refuses_to_start(&[("POLYTOMIC_WEBHOOK_ADDR", &addr)]);
    assert_says(
        &stderr,
        &[
            &format!("cannot listen on {addr} (POLYTOMIC_WEBHOOK_ADDR)"),
            "another program is already listening there",
            "Fix: stop it, or set POLYTOMIC_WEBHOOK_ADDR to a free port",
        ],
    );
    assert!(!stderr.contains("AddrInUse"), "{stderr}");
}

#[test]
fn a_secret_with_a_character_no_header_carries_is_explained_without_its_value() {
    let stderr = refuses_to_start(&[("POLYTOMIC_WEBHOOK_SECRET", "héllo-secret")]);
    assert_says(
        &stderr,
        &[
            "POLYTOMIC_WEBHOOK_SECRET (value not shown) is not a usable secret",
            "other than visible ASCII",
            "Expected the Secret of the Polytomic webhook connection",
            "Fix: ",
        ],
    );
    assert!(!stderr.contains("llo-secret"), "{stderr}");
    assert!(!stderr.contains("InvalidCharacter"), "{stderr}");
}

/// Set but empty is a mistake (a template variable that came out blank), not "unset": the
/// receiver must not make up a secret that Polytomic does not have.
#[test]
fn a_set_but_empty_secret_is_an_error() {
    for blank in ["", "  "] {
        let stderr = refuses_to_start(&[("POLYTOMIC_WEBHOOK_SECRET", blank)]);
        assert_says(
            &stderr,
            &[
                "POLYTOMIC_WEBHOOK_SECRET is set but empty (or only spaces)",
                "Fix: set POLYTOMIC_WEBHOOK_SECRET to that secret",
            ],
        );
        assert!(!stderr.contains("random secret"), "{stderr}");
    }
}

/// The previous secret follows the same rule: set but blank is a mistake, not "no rotation".
#[test]
fn a_set_but_empty_previous_secret_is_an_error() {
    let stderr = refuses_to_start(&[("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET", " ")]);
    assert_says(
        &stderr,
        &[
            "POLYTOMIC_WEBHOOK_PREVIOUS_SECRET is set but empty (or only spaces)",
            "Fix: set POLYTOMIC_WEBHOOK_PREVIOUS_SECRET to the previous secret, or unset it",
        ],
    );
}

#[test]
fn a_previous_secret_without_a_current_one_is_explained_without_its_value() {
    // Unset, not blank: without the previous secret the receiver would make up a current one.
    let stderr = refuses_to_start_without(
        &[("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET", "old-secret-value")],
        &["POLYTOMIC_WEBHOOK_SECRET"],
    );
    assert_says(
        &stderr,
        &[
            "POLYTOMIC_WEBHOOK_PREVIOUS_SECRET is set but POLYTOMIC_WEBHOOK_SECRET is not",
            "Fix: set POLYTOMIC_WEBHOOK_SECRET to the current secret",
        ],
    );
    assert!(!stderr.contains("old-secret-value"), "{stderr}");
    assert!(!stderr.contains("random secret"), "{stderr}");
}

/// The events route is off only when its variable is unset: one set but unusable stops the
/// receiver, naming the variable and never showing the value.
#[test]
fn an_unusable_events_secret_is_an_error_not_an_open_route() {
    let stderr = refuses_to_start(&[("POLYTOMIC_EVENTS_SECRET", " ")]);
    assert_says(
        &stderr,
        &[
            "POLYTOMIC_EVENTS_SECRET (value not shown) is not a usable signing secret",
            "Fix: set POLYTOMIC_EVENTS_SECRET",
        ],
    );
    let stderr = refuses_to_start(&[("POLYTOMIC_EVENTS_PREVIOUS_SECRET", "old-events-secret")]);
    assert_says(
        &stderr,
        &["POLYTOMIC_EVENTS_PREVIOUS_SECRET is set but POLYTOMIC_EVENTS_SECRET is not"],
    );
    assert!(!stderr.contains("old-events-secret"), "{stderr}");
}

/// A shared event id store that cannot be used stops the receiver rather than letting each
/// replica dedup on its own; the URL, which may carry a password, is never shown.
#[test]
fn an_unusable_events_redis_url_is_an_error_that_hides_the_url() {
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("redis://:hunter2-secret@127.0.0.1:{free_port}");
    for value in ["not a url hunter2-secret", unreachable.as_str(), " "] {
        let stderr = refuses_to_start(&[
            ("POLYTOMIC_EVENTS_SECRET", "events-secret"),
            ("POLYTOMIC_EVENTS_REDIS_URL", value),
        ]);
        assert!(stderr.contains("POLYTOMIC_EVENTS_REDIS_URL"), "{stderr}");
        assert!(
            stderr.contains("Fix: ") && stderr.contains("unset it"),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2-secret"), "{stderr}");
        // One message for a terminal, not a source line's indentation.
        let message = stderr.lines().next().unwrap();
        assert!(!message.contains("  "), "{message}");
    }
}

/// `POLYTOMIC_EVENTS_STORE` not in the `sqlite:PATH` form, naming a file that is not the
/// store's, or set beside `POLYTOMIC_EVENTS_REDIS_URL` stops the receiver with a message
/// naming the variable; the foreign file is left as it was.
#[test]
fn an_unusable_events_store_is_an_error() {
    let dir = std::env::temp_dir().join(format!("receiver-events-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = dir.join("notes.txt");
    std::fs::write(&foreign, "not a database, and not the store's to change").unwrap();
    let foreign_store = format!("sqlite:{}", foreign.display());
    for (env, says) in [
        (
            vec![("POLYTOMIC_EVENTS_STORE", "/var/lib/ids.db")],
            "sqlite:PATH",
        ),
        (vec![("POLYTOMIC_EVENTS_STORE", "sqlite:")], "sqlite:PATH"),
        (
            vec![(
                "POLYTOMIC_EVENTS_STORE",
                "redis://:hunter2-secret@127.0.0.1:1",
            )],
            "value not shown",
        ),
        (
            vec![("POLYTOMIC_EVENTS_STORE", foreign_store.as_str())],
            "cannot be used",
        ),
        (
            vec![
                ("POLYTOMIC_EVENTS_STORE", "sqlite:ids.db"),
                ("POLYTOMIC_EVENTS_REDIS_URL", "redis://127.0.0.1:1"),
            ],
            "both set",
        ),
    ] {
        let mut env = env;
        env.push(("POLYTOMIC_EVENTS_SECRET", "events-secret"));
        let stderr = refuses_to_start(&env);
        assert_says(&stderr, &["POLYTOMIC_EVENTS_STORE", says, "Fix: "]);
        assert!(!stderr.contains("hunter2-secret"), "{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&foreign).unwrap(),
        "not a database, and not the store's to change"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_bounds_events_limits_and_metrics_address_are_explained() {
    for (name, value, says) in [
        ("POLYTOMIC_WEBHOOK_MAX_IN_FLIGHT", "0", "at least 1"),
        (
            "POLYTOMIC_WEBHOOK_QUEUE_WAIT_MS",
            "half a second",
            "whole number",
        ),
        (
            "POLYTOMIC_WEBHOOK_MAX_DECODED_IN_FLIGHT",
            "-1",
            "whole number",
        ),
        (
            "POLYTOMIC_WEBHOOK_METRICS_ADDR",
            "localhost:9090",
            "host name",
        ),
        ("POLYTOMIC_EVENTS_MAX_RECEIVED_BYTES", "0", "at least 1"),
        (
            "POLYTOMIC_EVENTS_MAX_DECODED_BYTES",
            "1 MiB",
            "whole number",
        ),
        ("POLYTOMIC_EVENTS_MAX_AGE_SECS", "a week", "whole number"),
        ("POLYTOMIC_EVENTS_MAX_SKEW_SECS", "-5", "whole number"),
    ] {
        // With the Events route on, so that its variables are read.
        let stderr =
            refuses_to_start(&[("POLYTOMIC_EVENTS_SECRET", "events-secret"), (name, value)]);
        assert_says(
            &stderr,
            &[
                &format!("{name}={value:?}"),
                says,
                &format!("Fix: set {name}"),
            ],
        );
    }
}
