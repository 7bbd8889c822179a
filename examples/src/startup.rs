//! The examples' settings from the environment, and start-up errors a newcomer can act on.
//!
//! Every [`StartupError`] names the variable, shows the value it had (never a secret's), says
//! what was expected and how to fix it, in one or two lines meant for a terminal.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use polytomic_webhook::limit::ServerLimits;
use polytomic_webhook::prelude::*;
use polytomic_webhook::server::ServeOptions;
use polytomic_webhook_store::{RedisEventIdStore, SqliteEventIdStore};
use tokio::net::TcpListener;

/// The variable holding the address the examples listen on.
pub const ADDR_VAR: &str = "POLYTOMIC_WEBHOOK_ADDR";

/// The variable holding the webhook connection's secret.
pub const SECRET_VAR: &str = "POLYTOMIC_WEBHOOK_SECRET";

/// The variable holding, while rotating, the connection's previous secret.
pub const PREVIOUS_SECRET_VAR: &str = "POLYTOMIC_WEBHOOK_PREVIOUS_SECRET";

/// The variable with the organisation Events webhook's signing secret.
pub const EVENTS_SECRET_VAR: &str = "POLYTOMIC_EVENTS_SECRET";

/// The variable with the Events webhook's previous signing secret, while rotating.
pub const EVENTS_PREVIOUS_SECRET_VAR: &str = "POLYTOMIC_EVENTS_PREVIOUS_SECRET";

/// The variable with the URL of a Redis where replicas of the receiver share event ids.
pub const EVENTS_REDIS_URL_VAR: &str = "POLYTOMIC_EVENTS_REDIS_URL";

/// The variable naming a file where one receiver keeps its event ids across restarts:
/// `sqlite:PATH`.
pub const EVENTS_STORE_VAR: &str = "POLYTOMIC_EVENTS_STORE";

/// The variable with the most bytes an organisation event may have as received (1048576).
pub const EVENTS_MAX_RECEIVED_BYTES_VAR: &str = "POLYTOMIC_EVENTS_MAX_RECEIVED_BYTES";

/// The variable with the most bytes an organisation event may have once decoded (1048576).
pub const EVENTS_MAX_DECODED_BYTES_VAR: &str = "POLYTOMIC_EVENTS_MAX_DECODED_BYTES";

/// The variable with the most age, in seconds, of an event's signed `created_at` (604800, the
/// id store's TTL); 0 turns the check off.
pub const EVENTS_MAX_AGE_SECS_VAR: &str = "POLYTOMIC_EVENTS_MAX_AGE_SECS";

/// The variable with how far ahead, in seconds, an event's `created_at` may be (300); 0 turns
/// the check off.
pub const EVENTS_MAX_SKEW_SECS_VAR: &str = "POLYTOMIC_EVENTS_MAX_SKEW_SECS";

/// Where the examples listen when [`ADDR_VAR`] is unset.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3000);

/// A setting the examples cannot start with. `Display` is the whole message.
///
/// `Debug` prints the message too, so a `main` that returns this error (through `?` into
/// `Box<dyn Error>`) shows the message rather than a struct.
///
/// ```
/// let error = examples::startup::parse_listen_addr("localhost:3000").unwrap_err();
/// assert!(error.to_string().contains("127.0.0.1:3000"));
/// ```
pub struct StartupError(String);

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

/// The variable holding the address `/metrics` is served on instead of the webhook's port.
pub const METRICS_ADDR_VAR: &str = "POLYTOMIC_WEBHOOK_METRICS_ADDR";

/// The variable holding the most deliveries handled at once.
pub const MAX_IN_FLIGHT_VAR: &str = "POLYTOMIC_WEBHOOK_MAX_IN_FLIGHT";

/// The variable holding how long, in milliseconds, a delivery waits for a place.
pub const QUEUE_WAIT_MS_VAR: &str = "POLYTOMIC_WEBHOOK_QUEUE_WAIT_MS";

/// The variable holding the most decoded bytes all deliveries hold at once.
pub const MAX_DECODED_IN_FLIGHT_VAR: &str = "POLYTOMIC_WEBHOOK_MAX_DECODED_IN_FLIGHT";

/// The variable holding the most refused bodies drained at once.
pub const MAX_DRAINING_VAR: &str = "POLYTOMIC_WEBHOOK_MAX_DRAINING";

/// The variable holding how long, in milliseconds, one refused body may be drained.
pub const DRAIN_MS_VAR: &str = "POLYTOMIC_WEBHOOK_DRAIN_MS";

/// The variable holding how long, in milliseconds, a batch waits for its stdout line to be
/// written before it is answered 503.
pub const OUTPUT_WAIT_MS_VAR: &str = "POLYTOMIC_WEBHOOK_OUTPUT_WAIT_MS";

/// The variable holding the most connections open at once.
pub const MAX_CONNECTIONS_VAR: &str = "POLYTOMIC_WEBHOOK_MAX_CONNECTIONS";

/// The server-wide bounds: the library's defaults, changed by each variable that is set.
///
/// ```
/// let limits = examples::startup::server_limits()?;
/// # Ok::<(), examples::startup::StartupError>(())
/// ```
pub fn server_limits() -> Result<ServerLimits, StartupError> {
    let mut limits = ServerLimits::default();
    if let Some(max) = number_var(MAX_IN_FLIGHT_VAR, 1, "64")? {
        limits = limits.max_in_flight(usize::try_from(max).unwrap_or(usize::MAX));
    }
    if let Some(ms) = number_var(QUEUE_WAIT_MS_VAR, 0, "1000")? {
        limits = limits.queue_wait(Duration::from_millis(ms));
    }
    if let Some(bytes) = number_var(MAX_DECODED_IN_FLIGHT_VAR, 0, "268435456")? {
        limits = limits.max_decoded_in_flight(bytes);
    }
    if let Some(max) = number_var(MAX_DRAINING_VAR, 1, "64")? {
        limits = limits.max_draining(usize::try_from(max).unwrap_or(usize::MAX));
    }
    if let Some(ms) = number_var(DRAIN_MS_VAR, 0, "5000")? {
        limits = limits.drain_time(Duration::from_millis(ms));
    }
    Ok(limits)
}

/// How long a line waits for the output's writer: [`OUTPUT_WAIT_MS_VAR`], else the library's
/// default ([`DEFAULT_WAIT`](polytomic_webhook_store::lines::DEFAULT_WAIT), 5 s).
///
/// ```
/// let wait = examples::startup::output_wait()?;
/// # Ok::<(), examples::startup::StartupError>(())
/// ```
pub fn output_wait() -> Result<Duration, StartupError> {
    Ok(number_var(OUTPUT_WAIT_MS_VAR, 0, "5000")?.map_or(
        polytomic_webhook_store::lines::DEFAULT_WAIT,
        Duration::from_millis,
    ))
}

/// The Events layer's configuration with `secrets`: the library's defaults, changed by each
/// of the `POLYTOMIC_EVENTS_MAX_*` variables that is set.
///
/// ```
/// use polytomic_webhook::prelude::*;
///
/// let config = examples::startup::events_config(SigningSecrets::new("s3cret")?)?;
/// assert_eq!(config.decompression.max_compressed_bytes, 1 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn events_config(secrets: SigningSecrets) -> Result<PolytomicOrgEventsConfig, StartupError> {
    let mut config = PolytomicOrgEventsConfig::default().secrets(secrets);
    if let Some(bytes) = number_var(EVENTS_MAX_RECEIVED_BYTES_VAR, 1, "1048576")? {
        config = config.max_received_bytes(bytes);
    }
    if let Some(bytes) = number_var(EVENTS_MAX_DECODED_BYTES_VAR, 1, "1048576")? {
        config = config.max_decoded_bytes(bytes);
    }
    let window = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
    if let Some(secs) = number_var(EVENTS_MAX_AGE_SECS_VAR, 0, "604800")? {
        config = config.max_event_age(window(secs));
    }
    if let Some(secs) = number_var(EVENTS_MAX_SKEW_SECS_VAR, 0, "300")? {
        config = config.max_event_skew(window(secs));
    }
    Ok(config)
}

/// The connection bounds of the server loop: the library's defaults, changed by each variable
/// that is set.
///
/// ```
/// let options = examples::startup::serve_options()?;
/// # Ok::<(), examples::startup::StartupError>(())
/// ```
pub fn serve_options() -> Result<ServeOptions, StartupError> {
    let mut options = ServeOptions::default();
    if let Some(max) = number_var(MAX_CONNECTIONS_VAR, 1, "4096")? {
        options = options.max_connections(usize::try_from(max).unwrap_or(usize::MAX));
    }
    Ok(options)
}

/// The whole number in the variable `name`, at least `min`; `None` when it is unset or blank.
fn number_var(name: &str, min: u64, example: &str) -> Result<Option<u64>, StartupError> {
    let value = match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => String::from("(not UTF-8)"),
        Ok(value) if value.trim().is_empty() => return Ok(None),
        Ok(value) => value,
    };
    match value.trim().parse::<u64>() {
        Ok(number) if number >= min => Ok(Some(number)),
        _ => Err(StartupError(format!(
            "{name}={value:?} is not a whole number of at least {min}. Fix: set {name} to \
             one, such as {name}={example}, or unset it for the default."
        ))),
    }
}

/// The address to listen on: [`ADDR_VAR`], else [`DEFAULT_ADDR`].
///
/// ```
/// let addr = examples::startup::listen_addr()?;
/// # Ok::<(), examples::startup::StartupError>(())
/// ```
pub fn listen_addr() -> Result<SocketAddr, StartupError> {
    let unset = format!("unset it to listen on {DEFAULT_ADDR}");
    Ok(addr_var(ADDR_VAR, &unset)?.unwrap_or(DEFAULT_ADDR))
}

/// Where to serve `/metrics` on its own: [`METRICS_ADDR_VAR`], else `None` (on the webhook's
/// port).
pub fn metrics_addr() -> Result<Option<SocketAddr>, StartupError> {
    addr_var(
        METRICS_ADDR_VAR,
        "unset it to serve /metrics on the webhook's port",
    )
}

/// The address in the variable `name`; `None` when it is unset or blank.
fn addr_var(name: &str, unset: &str) -> Result<Option<SocketAddr>, StartupError> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(StartupError(format!(
            "{name} is not valid UTF-8. Expected an IP address and port, such as \
             {DEFAULT_ADDR}. Fix: set it to one, or {unset}."
        ))),
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => parse_addr(name, &value, unset).map(Some),
    }
}

/// Parses [`ADDR_VAR`]'s value, explaining the usual mistakes: a host name, a missing port,
/// a missing IP address.
pub fn parse_listen_addr(value: &str) -> Result<SocketAddr, StartupError> {
    parse_addr(
        ADDR_VAR,
        value,
        &format!("unset it to listen on {DEFAULT_ADDR}"),
    )
}

fn parse_addr(name: &str, value: &str, unset: &str) -> Result<SocketAddr, StartupError> {
    polytomic_webhook::server::parse_listen_addr(value, DEFAULT_ADDR).map_err(|bad| {
        StartupError(format!(
            "{name}={value:?} is not an address to listen on: {problem}. Expected an IP \
             address and a port, such as {DEFAULT_ADDR}. Fix: set {name}={suggestion}, or \
             {unset}.",
            problem = bad.problem(),
            suggestion = bad.suggestion(),
        ))
    })
}

/// The secret in the variable `name`, taken whole (a comma is part of it); `None` when it is
/// not set at all. A variable that is set but empty is an error: a deployment whose secret
/// came out blank must not start with some other secret, or without the previous secret it
/// meant to keep accepting. The error never contains the value.
///
/// ```
/// // Unset: no secret, and no error.
/// let secret = examples::startup::secret_var("EXAMPLE_SECRET_THAT_IS_NOT_SET")?;
/// assert!(secret.is_none());
/// # Ok::<(), examples::startup::StartupError>(())
/// ```
pub fn secret_var(name: &str) -> Result<Option<Secret>, StartupError> {
    let Some(value) = var_value(name, "the Secret of the Polytomic webhook connection")? else {
        return Ok(None);
    };
    match Secret::new(value) {
        Ok(secret) => Ok(Some(secret)),
        Err(InvalidSecret::Empty) if name == PREVIOUS_SECRET_VAR => Err(StartupError(format!(
            "{name} is set but empty (or only spaces). Expected, while rotating, the secret \
             being replaced (the new one goes in {SECRET_VAR}). Fix: set {name} to the previous \
             secret, or unset it when no rotation is under way."
        ))),
        Err(InvalidSecret::Empty) => Err(StartupError(format!(
            "{name} is set but empty (or only spaces). Expected the Secret of the Polytomic \
             webhook connection. Fix: set {name} to that secret (the receiver example makes one \
             up for a trial when the variable is not set at all)."
        ))),
        Err(error) => Err(StartupError(format!(
            "{name} (value not shown) is not a usable secret: {error}. Expected the Secret of \
             the Polytomic webhook connection, which an Authorization header can carry. Fix: \
             copy the secret from the connection again, or choose a new one in visible ASCII \
             and enter it in Polytomic too."
        ))),
    }
}

/// The variable's value, `None` when it is not set; `expected` says what it should hold.
fn var_value(name: &str, expected: &str) -> Result<Option<String>, StartupError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(StartupError(format!(
            "{name} (value not shown) is not valid UTF-8. Expected {expected}, in visible ASCII \
             characters. Fix: set {name} to that secret."
        ))),
    }
}

/// The Events webhook's signing secrets from [`EVENTS_SECRET_VAR`] and, while rotating,
/// [`EVENTS_PREVIOUS_SECRET_VAR`]; `None` when neither is set (the route is then off). A
/// variable set but unusable, or the previous one alone, is an error that never shows the
/// value.
///
/// ```
/// // Neither variable set: no events route, and no error.
/// assert!(examples::startup::events_secrets_from(|_| None)?.is_none());
/// # Ok::<(), examples::startup::StartupError>(())
/// ```
pub fn events_secrets() -> Result<Option<SigningSecrets>, StartupError> {
    let expected = "the secret given when the organisation's Events webhook was created";
    let current = var_value(EVENTS_SECRET_VAR, expected)?;
    let previous = var_value(EVENTS_PREVIOUS_SECRET_VAR, expected)?;
    events_secrets_from(|name| {
        if name == EVENTS_SECRET_VAR {
            current.clone()
        } else {
            previous.clone()
        }
    })
}

/// [`events_secrets`] over any source of variables (for tests).
pub fn events_secrets_from(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<SigningSecrets>, StartupError> {
    let unusable = |name: &str, error: InvalidSecret| {
        StartupError(format!(
            "{name} (value not shown) is not a usable signing secret: {error}. Expected the \
             secret given when the organisation's Events webhook was created. Fix: set {name} \
             to that secret, or unset it to turn the events route off."
        ))
    };
    let previous = var(EVENTS_PREVIOUS_SECRET_VAR);
    let Some(current) = var(EVENTS_SECRET_VAR) else {
        return match previous {
            None => Ok(None),
            Some(_) => Err(StartupError(format!(
                "{EVENTS_PREVIOUS_SECRET_VAR} is set but {EVENTS_SECRET_VAR} is not. Fix: set \
                 {EVENTS_SECRET_VAR} to the current signing secret, or unset \
                 {EVENTS_PREVIOUS_SECRET_VAR}."
            ))),
        };
    };
    let mut secrets =
        SigningSecrets::new(current).map_err(|error| unusable(EVENTS_SECRET_VAR, error))?;
    if let Some(previous) = previous {
        secrets = secrets
            .with(previous)
            .map_err(|error| unusable(EVENTS_PREVIOUS_SECRET_VAR, error))?;
    }
    Ok(Some(secrets))
}

/// Where the receiver remembers which events it handled, from [`EVENTS_STORE_VAR`] or
/// [`EVENTS_REDIS_URL_VAR`] (at most one of them).
///
/// ```
/// use examples::startup::EventsStore;
///
/// fn describe(store: &EventsStore) -> &'static str {
///     match store {
///         EventsStore::Memory => "this process only",
///         EventsStore::Sqlite(_) => "a file, across restarts",
///         EventsStore::Redis(_) => "shared by the replicas",
///     }
/// }
/// assert_eq!(describe(&EventsStore::Memory), "this process only");
/// ```
#[derive(Debug)]
pub enum EventsStore {
    /// Neither variable set: this process's memory, forgotten when it restarts.
    Memory,
    /// [`EVENTS_STORE_VAR`] `=sqlite:PATH`: a file of its own, kept across restarts.
    Sqlite(SqliteEventIdStore),
    /// [`EVENTS_REDIS_URL_VAR`]: a Redis shared by every replica.
    Redis(RedisEventIdStore),
}

/// The event id store the variables name, opened or connected. A value that is blank, not in
/// the expected form, or names a file or Redis that cannot be used is an error naming the
/// variable; a Redis URL is never shown (it may carry a password).
pub async fn events_store() -> Result<EventsStore, StartupError> {
    let expected_file = "sqlite:PATH, a file of the event-id store's own";
    let file = var_value(EVENTS_STORE_VAR, expected_file)?;
    let redis = var_value(EVENTS_REDIS_URL_VAR, "a Redis URL")?;
    match (file, redis) {
        (Some(_), Some(_)) => Err(StartupError(format!(
            "{EVENTS_STORE_VAR} and {EVENTS_REDIS_URL_VAR} are both set. Expected one event id \
             store. Fix: unset one of them."
        ))),
        (Some(value), None) => {
            let path = sqlite_events_path(&value)?;
            SqliteEventIdStore::open(path)
                .await
                .map(EventsStore::Sqlite)
                .map_err(|error| {
                    StartupError(format!(
                        "{EVENTS_STORE_VAR}={value:?} cannot be used: {error}. Fix: give it a \
                         file of its own in a writable directory."
                    ))
                })
        }
        (None, Some(url)) => redis_events_store(&url).await.map(EventsStore::Redis),
        (None, None) => Ok(EventsStore::Memory),
    }
}

/// The path in an [`EVENTS_STORE_VAR`] value, `sqlite:PATH`.
///
/// ```
/// let path = examples::startup::sqlite_events_path("sqlite:/var/lib/receiver/event-ids.db")?;
/// assert_eq!(path, std::path::Path::new("/var/lib/receiver/event-ids.db"));
/// assert!(examples::startup::sqlite_events_path("redis://127.0.0.1").is_err());
/// assert!(examples::startup::sqlite_events_path("sqlite:").is_err());
/// # Ok::<(), examples::startup::StartupError>(())
/// ```
pub fn sqlite_events_path(value: &str) -> Result<std::path::PathBuf, StartupError> {
    match value.trim().strip_prefix("sqlite:") {
        Some(path) if !path.is_empty() => Ok(path.into()),
        // Not shown: a value not of this form may be a Redis URL with its password.
        _ => Err(StartupError(format!(
            "{EVENTS_STORE_VAR} (value not shown) is not a store. Expected sqlite:PATH, such as \
             sqlite:/var/lib/receiver/event-ids.db. Fix: set {EVENTS_STORE_VAR} to that form, \
             use {EVENTS_REDIS_URL_VAR} for Redis, or unset it to remember event ids in this \
             process only."
        ))),
    }
}

/// The shared event id store at the Redis `url` of [`EVENTS_REDIS_URL_VAR`], connected; a
/// value that is blank, not a Redis URL, or a Redis that cannot be reached is an error that
/// never shows the URL (it may carry a password), only the address of a Redis it could not
/// reach.
async fn redis_events_store(url: &str) -> Result<RedisEventIdStore, StartupError> {
    let name = EVENTS_REDIS_URL_VAR;
    let expected = "a Redis URL such as redis://127.0.0.1:6379";
    if url.trim().is_empty() {
        return Err(StartupError(format!(
            "{name} is set but empty. Expected {expected}, shared by every replica. Fix: set \
             {name} to it, or unset it to remember event ids in this process only."
        )));
    }
    RedisEventIdStore::connect(url.trim())
        .await
        .map_err(|error| {
            StartupError(format!(
                "{name} cannot be used: {error}. Expected {expected}, \
                 reachable from here. Fix: correct {name} or start that Redis, or unset it to \
                 remember event ids in this process only."
            ))
        })
}

/// The secret in the variable `name`, which must be set (see [`secret_var`]).
pub fn required_secret_var(name: &str) -> Result<Secret, StartupError> {
    secret_var(name)?.ok_or_else(|| {
        StartupError(format!(
            "{name} is not set. Expected the Secret of the Polytomic webhook connection. Fix: \
             set {name} to that secret."
        ))
    })
}

/// The error for [`PREVIOUS_SECRET_VAR`] set while [`SECRET_VAR`] is not: a previous secret
/// alone would make the example start with a made-up current one.
pub fn previous_without_current() -> StartupError {
    StartupError(format!(
        "{PREVIOUS_SECRET_VAR} is set but {SECRET_VAR} is not. Expected {SECRET_VAR} to hold \
         the connection's current secret and {PREVIOUS_SECRET_VAR} the one being replaced. \
         Fix: set {SECRET_VAR} to the current secret, or unset {PREVIOUS_SECRET_VAR}."
    ))
}

/// Binds `addr`, explaining the usual failures: the port is taken, needs privileges, or the
/// address is not one of this machine's.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    bind_var(ADDR_VAR, addr).await
}

/// [`bind`] for the address taken from the variable `name`, which the errors name.
pub async fn bind_var(name: &str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    polytomic_webhook::server::bind(addr).map_err(|error| bind_error(name, addr, &error))
}

fn bind_error(name: &str, addr: SocketAddr, error: &io::Error) -> StartupError {
    let other_port = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024));
    let fix = match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "another program is already listening there. Fix: stop it, or set \
             {name} to a free port, such as {other_port}."
        ),
        io::ErrorKind::PermissionDenied => format!(
            "this user may not listen there (ports below 1024 usually need privileges). \
             Fix: set {name} to a port above 1023, such as {DEFAULT_ADDR}."
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine. Fix: set {name} to \
             127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface).",
            addr.ip(),
            port = addr.port()
        ),
        _ => format!("{error}. Fix: set {name} to another address, such as {DEFAULT_ADDR}."),
    };
    StartupError(format!("cannot listen on {addr} ({name}): {fix}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    #[test]
    fn addresses_parse_and_mistakes_are_explained() {
        assert_eq!(
            parse_listen_addr(" 0.0.0.0:8080 ").unwrap().to_string(),
            "0.0.0.0:8080"
        );
        for (value, says, suggests) in [
            ("localhost:3000", "host name", "127.0.0.1:3000"),
            ("127.0.0.1", "port is missing", "127.0.0.1:3000"),
            ("::1", "port is missing", "[::1]:3000"),
            (":8080", "IP address is missing", "127.0.0.1:8080"),
            ("nonsense", "not an IP address and port", "127.0.0.1:3000"),
        ] {
            let message = parse_listen_addr(value).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("{ADDR_VAR}=\"{value}\" is not an address")),
                "{message}"
            );
            assert!(message.contains(says), "{message}");
            assert!(
                message.contains(&format!("Fix: set {ADDR_VAR}={suggests},")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_required_secret_that_is_not_set_is_named() {
        let name = "EXAMPLES_STARTUP_TEST_SECRET_NEVER_SET";
        assert!(secret_var(name).unwrap().is_none());
        let message = required_secret_var(name).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{name} is not set.")),
            "{message}"
        );
        assert!(message.contains(&format!("Fix: set {name}")), "{message}");
    }

    #[test]
    fn bind_errors_name_the_variable_and_a_fix() {
        let addr: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let busy =
            bind_error(ADDR_VAR, addr, &io::Error::from(io::ErrorKind::AddrInUse)).to_string();
        assert!(
            busy.starts_with("cannot listen on 127.0.0.1:3000 (POLYTOMIC_WEBHOOK_ADDR)"),
            "{busy}"
        );
        assert!(busy.contains("already listening"), "{busy}");
        assert!(busy.contains("127.0.0.1:3001"), "{busy}");
        let denied = bind_error(
            ADDR_VAR,
            addr,
            &io::Error::from(io::ErrorKind::PermissionDenied),
        )
        .to_string();
        assert!(denied.contains("above 1023"), "{denied}");
    }

    #[test]
    fn events_secrets_are_optional_rotate_and_are_never_shown() {
        let vars = |current: Option<&str>, previous: Option<&str>| {
            let (current, previous) = (current.map(str::to_owned), previous.map(str::to_owned));
            move |name: &str| {
                if name == EVENTS_SECRET_VAR {
                    current.clone()
                } else {
                    previous.clone()
                }
            }
        };
        assert!(events_secrets_from(vars(None, None)).unwrap().is_none());
        let one = events_secrets_from(vars(Some("current"), None))
            .unwrap()
            .unwrap();
        assert_eq!(one.len(), 1);
        let two = events_secrets_from(vars(Some("current"), Some("previous")))
            .unwrap()
            .unwrap();
        assert_eq!(two.len(), 2);
        let alone = events_secrets_from(vars(None, Some("previous"))).unwrap_err();
        assert!(alone.to_string().contains(EVENTS_SECRET_VAR), "{alone}");
        for (current, previous, named) in [
            (Some("  "), None, EVENTS_SECRET_VAR),
            (
                Some("ok"),
                Some("bad\u{1}hidden"),
                EVENTS_PREVIOUS_SECRET_VAR,
            ),
        ] {
            let error = events_secrets_from(vars(current, previous)).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(named), "{text}");
            assert!(!text.contains("hidden"), "{text}");
        }
    }
}
