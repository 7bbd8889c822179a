//! The axum-core extractors: axum's body limit, then [`read`](crate::read).

use axum_core::RequestExt;
use axum_core::extract::{FromRequest, Request};
use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::config::EventConfig;
use crate::event::{PolytomicEvent, SyncRecords};
use crate::read::{read, read_body, read_event};
use crate::rejection::{EventRejection, UnsupportedMediaType};

impl<T, S> FromRequest<S> for PolytomicEvent<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_event(req.with_limited_body()).await
    }
}

impl<T, S> FromRequest<S> for SyncRecords<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read(req.with_limited_body()).await
    }
}

/// The extractors' body reading: axum's `DefaultBodyLimit` exactly as axum's own extractors
/// apply it (keeping the request's extensions), then [`read_body`].
pub(crate) async fn buffer(req: Request) -> Result<(EventConfig, Bytes), EventRejection> {
    read_body(req.with_limited_body()).await
}

pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), UnsupportedMediaType> {
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
