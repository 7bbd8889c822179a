//! The axum-core extractors: `Content-Type` check, body buffering, then [`parse`].

use axum_core::RequestExt;
use axum_core::extract::{FromRequest, Request};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use http_body::Body as _;
use http_body_util::BodyExt;
use polytomic_webhook_core::body::BodyStats;
use serde::de::DeserializeOwned;

use crate::config::EventConfig;
use crate::event::{PolytomicEvent, SyncRecords};
use crate::parse::{parse_shared, parse_sync_records_shared};
use crate::rejection::{BodyTooLarge, EventRejection, TooLargeLimit, UnsupportedMediaType};

impl<T, S> FromRequest<S> for PolytomicEvent<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (config, body) = buffer(req).await?;
        parse_shared(&body, &config)
    }
}

impl<T, S> FromRequest<S> for SyncRecords<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (config, body) = buffer(req).await?;
        parse_sync_records_shared(&body, &config)
    }
}

/// Checks the `Content-Type` and reads the whole body once, under every applicable limit.
pub(crate) async fn buffer(req: Request) -> Result<(EventConfig, Bytes), EventRejection> {
    let config = req
        .extensions()
        .get::<EventConfig>()
        .cloned()
        .unwrap_or_default();
    check_content_type(req.headers())?;
    // Taken before the body is consumed: it is how the decompression layer says which of its
    // limits fired, which the body error itself cannot.
    let stats = req.extensions().get::<BodyStats>().cloned();
    // Applies axum's `DefaultBodyLimit` exactly as axum's own extractors do, keeping the
    // request's extensions intact.
    let mut body = req.into_limited_body();
    let limit = config.max_body_bytes;
    let too_large = || {
        BodyTooLarge::new(TooLargeLimit::Extractor(
            u64::try_from(limit).unwrap_or(u64::MAX),
        ))
    };
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(too_large().into());
    }

    // Frames are kept as they arrive and joined once at the end into a buffer of the exact size:
    // no regrowth copies, so the peak stays near twice the body, and a body refused at a limit
    // (a decompression bomb) is never copied at all. A body that arrives in one frame is kept as is.
    let mut frames: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| EventRejection::from_body_error(error, stats.as_ref()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(too_large().into());
        }
        if !data.is_empty() {
            frames.push(data);
        }
    }
    let body = if frames.len() == 1 {
        frames.pop().unwrap_or_default()
    } else {
        let mut joined = BytesMut::with_capacity(len);
        for frame in &frames {
            joined.extend_from_slice(frame);
        }
        joined.freeze()
    };
    Ok((config, body))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), UnsupportedMediaType> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(UnsupportedMediaType::missing());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    let is_json = essence.eq_ignore_ascii_case("application/json")
        || essence.split_once('/').is_some_and(|(kind, subtype)| {
            kind.eq_ignore_ascii_case("application")
                && subtype.len() > "+json".len()
                && subtype
                    .get(subtype.len() - "+json".len()..)
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(UnsupportedMediaType::not_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accepts(content_type: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        check_content_type(&headers).is_ok()
    }

    #[test]
    fn content_type_rules() {
        assert!(accepts("application/json"));
        assert!(accepts("Application/JSON; charset=utf-8"));
        assert!(accepts("application/vnd.polytomic+json"));
        assert!(accepts("application/problem+JSON ;charset=UTF-8"));
        assert!(!accepts("text/json"));
        assert!(!accepts("application/+json"));
        assert!(!accepts("application/jsonx"));
        assert!(!accepts("text/plain"));
        assert!(!accepts("application/x-www-form-urlencoded"));
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
