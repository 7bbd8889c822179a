//! Bounded, streaming decompression of HTTP request bodies, as tower middleware.
//!
//! Polytomic compresses its webhook deliveries with gzip. [`DecompressionLayer`] decodes request
//! bodies on the fly, in front of any tower service (axum, tonic, hyper), and refuses anything
//! that would cost more memory than you allow, including a "zip bomb" that inflates a few
//! kilobytes into gigabytes.
//!
//! # What it does
//!
//! - **Codings.** `gzip` (also `x-gzip`) is on by default; `deflate` (the zlib format, as HTTP
//!   defines it), `br` and `zstd` are behind cargo features of the same names. Header matching
//!   ignores case and surrounding whitespace. Concatenated gzip members (and zstd frames) decode
//!   to the concatenation of their contents.
//! - **Stacking** is off by default: one coding per request, as Polytomic sends. Raised with
//!   [`max_codings`](DecompressionLayer::max_codings) (up to [`MAX_STACKED_CODINGS`]), a list
//!   such as `Content-Encoding: gzip, br` is undone in reverse order, and every layer's output,
//!   seen or not, answers to the limits below.
//! - **Sniffing.** A body that declares no coding (or `identity`) but starts with the gzip magic
//!   bytes `1f 8b 08` is decoded as gzip. Polytomic's own sample delivery carries
//!   `Accept-Encoding: gzip` and no `Content-Encoding`, so a receiver that trusts the header
//!   alone can be handed raw gzip it then fails to parse. This costs nothing for JSON: a JSON
//!   text never starts with the byte `0x1f`, which is a control character. At most the first
//!   three bytes are held back to decide. Turn it off with
//!   [`sniff_gzip(false)`](DecompressionLayer::sniff_gzip).
//! - **Unsupported codings** (`compress`, a coding whose feature is off, more stacked codings
//!   than allowed) are refused with 415 and an `Accept-Encoding` header listing what is
//!   accepted (RFC 9110 §12.5.3); the inner service is not called.
//! - **Limits, on by default** (see [`DecompressionConfig`]): 32 MiB decoded, 32 MiB received,
//!   and a 100:1 ratio checked once 1 MiB has been decoded. A `Content-Length` over the received
//!   limit is refused with 413 before the inner service is called. Otherwise the body fails the
//!   moment a limit is passed, and reads no more input.
//! - **Bounded work per poll.** After about 1 MiB of decoding work (input read plus what every
//!   layer produced) the body returns `Pending`, waking itself, so a small body that costs a
//!   lot to decode cannot hold a runtime thread. Before it does, it polls the inner body once,
//!   so an error there (a deadline, a closed connection) ends it promptly; data that arrives
//!   meanwhile is queued, within the received-size limit.
//! - **Headers and extensions.** Once the body is decoded (or may be, when sniffing),
//!   `Content-Encoding` and `Content-Length` are removed. A [`DecompressionInfo`] extension tells
//!   the coding and byte counts, and a [`BodyStats`](polytomic_webhook_core::body::BodyStats)
//!   extension tells which limit fired.
//!
//! # Errors downstream
//!
//! The decoded body's error type is a boxed error:
//!
//! | what happened | error | axum's `Bytes`/`Json` | our `PolytomicEvent` extractor |
//! |---|---|---|---|
//! | a limit fired | [`http_body_util::LengthLimitError`](https://docs.rs/http-body-util/latest/http_body_util/struct.LengthLimitError.html) | 413 | 413 `body_too_large`, naming the limit |
//! | corrupt or truncated data | [`InvalidCompressedBody`](polytomic_webhook_core::body::InvalidCompressedBody) | 400 | 400 `invalid_compressed_body` |
//! | the connection failed | the inner body's error | 400 | 400 `body_read_failed` |
//!
//! Refusals made by the layer itself are `application/problem+json` (RFC 9457) with the codes
//! `unsupported_content_encoding` (415) and `body_too_large` (413), each logged as one `warn`
//! event with the code and the peer address, as the auth crate's layers log theirs. The layer
//! is the core crate's `CheckService` running the [`DecompressionConfig`] check, the same check
//! that `PolytomicWebhookLayer` runs; the refused body is left unread in both.
//!
//! # Performance
//!
//! The codecs are the push-style ones of `async-compression`, driven directly: each received
//! frame is fed to the decoder as is, and output is decoded straight into the `Bytes` frames the
//! body yields (buffers start at 32 KiB and double up to 1 MiB), so a body is decoded in one pass
//! with no intermediate reader and no second copy. gzip and deflate use flate2 with its `zlib-rs`
//! backend, the fastest pure-Rust inflate available; this crate names flate2 only to select it.
//!
//! # Examples
//!
//! See [`DecompressionLayer`]: in an axum `Router`, and in a plain `tower::ServiceBuilder`.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod coding;
mod config;
mod future;
mod info;
mod layer;
mod pipeline;
mod rejection;
mod service;

pub use body::DecompressionBody;
pub use coding::{Coding, Codings, MAX_STACKED_CODINGS, UnsupportedContentEncoding};
pub use config::DecompressionConfig;
pub use future::ResponseFuture;
pub use info::DecompressionInfo;
pub use layer::DecompressionLayer;
pub use rejection::DecompressionRejection;
pub use service::Decompression;
