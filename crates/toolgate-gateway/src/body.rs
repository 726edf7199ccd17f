//! Response bodies and small response builders shared by every handler.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Errors a streamed body can end with (an upstream connection that broke mid-stream).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway produces: a buffer, an upstream body passed through, or
/// a stream fed by a channel.
pub type Body = BoxBody<Bytes, BodyError>;

/// A request body read whole, at most `limit` bytes: else the status to refuse it with
/// (413 past the limit, 400 if it could not be read) and why.
pub async fn read_request(
    incoming: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    use hyper::body::Body as _;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
    };
    // A Content-Length past the limit is refused before anything is read: otherwise the
    // answer would wait for bytes that may never come (the stress test sends a length of
    // terabytes and stops).
    if incoming.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    match http_body_util::Limited::new(incoming, limit)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body streamed from a channel; the stream ends when every sender is dropped.
pub fn channel(rx: mpsc::UnboundedReceiver<Bytes>) -> Body {
    StreamBody::new(ChannelStream { rx }).boxed()
}

/// Adapts an unbounded receiver to the `Stream` of frames `StreamBody` wants.
struct ChannelStream {
    /// Chunks to send, in order.
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl futures_core::Stream for ChannelStream {
    type Item = Result<Frame<Bytes>, BodyError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A JSON response with the given status.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text response with the given status.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(message.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An empty response with the given status.
pub fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

/// The headers of an SSE response; the body comes from `rx`.
pub fn sse(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<Body> {
    let mut response = Response::new(channel(rx));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
