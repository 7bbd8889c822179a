//! Where a sink is, as one URL: `sqlite:PATH` or `redis://HOST:PORT[/DB][?stream=NAME]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::{Durability, Identity, RecordStream, Sink, SinkError};

/// A sink's location, as given on a command line.
///
/// ```
/// use polytomic_webhook_store::SinkUrl;
///
/// let sqlite: SinkUrl = "sqlite:records.db".parse().unwrap();
/// assert_eq!(sqlite, SinkUrl::Sqlite("records.db".into()));
/// let redis: SinkUrl = "redis://127.0.0.1:6379/2?stream=events".parse().unwrap();
/// assert_eq!(
///     redis,
///     SinkUrl::Redis { url: "redis://127.0.0.1:6379/2".into(), stream: Some("events".into()) }
/// );
/// assert!("postgres://db".parse::<SinkUrl>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum SinkUrl {
    /// `sqlite:PATH`: the SQLite file at `PATH`.
    Sqlite(PathBuf),
    /// `redis://…` or `rediss://…` (TLS): a Redis server.
    Redis {
        /// The connection URL without the `stream` parameter (it may hold a password).
        url: String,
        /// The `stream` parameter: the name the record streams are named after.
        stream: Option<String>,
    },
}

/// A sink URL that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkUrlError(&'static str);

impl fmt::Display for SinkUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SinkUrlError {}

impl FromStr for SinkUrl {
    type Err = SinkUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            // `sqlite://PATH` is the form other tools use; take it too.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(SinkUrlError("expected sqlite:PATH, with a file path"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("redis://") || text.starts_with("rediss://") {
            let (base, query) = text.split_once('?').unwrap_or((text, ""));
            let mut stream = None;
            let mut rest = Vec::new();
            for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                match pair.strip_prefix("stream=") {
                    Some("") => return Err(SinkUrlError("the stream name must not be empty")),
                    Some(name) => stream = Some(name.to_owned()),
                    None => rest.push(pair),
                }
            }
            let url = if rest.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            return Ok(Self::Redis { url, stream });
        }
        Err(SinkUrlError(
            "expected sqlite:PATH or redis://HOST:PORT[/DB][?stream=NAME]",
        ))
    }
}

impl SinkUrl {
    /// Opens the sink: creates the SQLite file if needed (with `durability`; a file that is
    /// not a sink's, or that cannot be written, is refused), or connects to Redis. An error
    /// names what failed, never the URL (it may hold a password).
    pub async fn open(
        &self,
        identity: Identity,
        durability: Durability,
    ) -> Result<Arc<dyn Sink>, SinkError> {
        self.open_with_ttl(identity, durability, None).await
    }

    /// [`open`](Self::open), with a Redis sink keeping the state of records identified by
    /// their hash for `redis_ttl` only (see `RedisSink::connect`); a SQLite sink ignores it.
    pub async fn open_with_ttl(
        &self,
        identity: Identity,
        durability: Durability,
        redis_ttl: Option<Duration>,
    ) -> Result<Arc<dyn Sink>, SinkError> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => Ok(Arc::new(
                crate::SqliteSink::open(path, identity, durability).await?,
            )),
            #[cfg(feature = "redis")]
            Self::Redis { url, stream } => {
                let _ = durability; // Redis's own persistence settings decide.
                let stream = stream.as_deref().unwrap_or(crate::DEFAULT_STREAM);
                Ok(Arc::new(
                    crate::RedisSink::connect(url, stream, identity, redis_ttl).await?,
                ))
            }
            #[allow(unreachable_patterns)] // Reachable only with a sink feature off.
            _ => {
                let _ = (identity, durability, redis_ttl);
                Err(SinkError::new(
                    "this build has no support for that kind of sink (a cargo feature is off)",
                ))
            }
        }
    }

    /// Every record the sink holds, in store order, a page at a time (what `dump` prints). A
    /// SQLite file is read through a read-only connection, without setting up a sink; a
    /// missing file is an error, not a new empty one, and a file that is not a sink's is
    /// refused.
    pub async fn record_stream(&self) -> Result<RecordStream<'static>, SinkError> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => Ok(crate::sqlite::record_stream(path)),
            #[cfg(feature = "redis")]
            Self::Redis { url, stream } => {
                let stream = stream.as_deref().unwrap_or(crate::DEFAULT_STREAM);
                let sink = crate::RedisSink::connect(url, stream, Identity::hash(), None).await?;
                Ok(sink.listing())
            }
            #[allow(unreachable_patterns)] // Reachable only with a sink feature off.
            _ => Err(SinkError::new(
                "this build has no support for that kind of sink (a cargo feature is off)",
            )),
        }
    }
}

impl fmt::Debug for SinkUrl {
    /// Never shows a Redis URL, which may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Redis { stream, .. } => f
                .debug_struct("Redis")
                .field("stream", stream)
                .finish_non_exhaustive(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_redis_password_stays_out_of_debug() {
        let url: SinkUrl = "redis://:hunter2@127.0.0.1:6379".parse().unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn other_query_parameters_are_kept_for_the_client() {
        let url: SinkUrl = "redis://h:1/0?protocol=resp3&stream=s".parse().unwrap();
        assert_eq!(
            url,
            SinkUrl::Redis {
                url: "redis://h:1/0?protocol=resp3".into(),
                stream: Some("s".into())
            }
        );
        assert!("sqlite:".parse::<SinkUrl>().is_err());
        assert!("redis://h:1?stream=".parse::<SinkUrl>().is_err());
    }
}
