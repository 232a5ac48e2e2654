//! Body types of the edge: [`EdgeBody`] for responses to clients and
//! [`ProxyBody`] for requests forwarded to apps. Plain enums rather than
//! boxed trait objects, so no per-request allocation is spent on them.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::Take;
use tokio_util::io::ReaderStream;

use crate::pool::Lease;
use crate::tap::BodyMeter;
use crate::upstreams::InFlightGuard;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// Body of a response sent to a client.
pub(crate) enum EdgeBody {
    Empty,
    /// One in-memory chunk (generated pages, small files); `None` once sent.
    Full(Option<Bytes>),
    /// An app's response body, streamed through. The lease hands the app
    /// connection back to the pool when this body is dropped; the request
    /// counts as in flight to its instance until then (a drain waits for it).
    Upstream {
        body: Incoming,
        _lease: Lease,
        _in_flight: InFlightGuard,
    },
    /// A file streamed from disk; `remaining` keeps the size hint exact.
    File {
        stream: ReaderStream<Take<tokio::fs::File>>,
        remaining: u64,
    },
}

impl EdgeBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        EdgeBody::Full(Some(bytes.into()))
    }

    pub(crate) fn file(file: tokio::fs::File, len: u64) -> Self {
        use tokio::io::AsyncReadExt;
        const CHUNK: usize = 64 * 1024;
        EdgeBody::File {
            stream: ReaderStream::with_capacity(file.take(len), CHUNK),
            remaining: len,
        }
    }
}

impl Body for EdgeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            EdgeBody::Empty => Poll::Ready(None),
            EdgeBody::Full(chunk) => Poll::Ready(chunk.take().map(|b| Ok(Frame::data(b)))),
            EdgeBody::Upstream { body: incoming, .. } => {
                Pin::new(incoming).poll_frame(cx).map_err(|e| Box::new(e) as BoxError)
            }
            EdgeBody::File { stream, remaining } => {
                match ready!(Pin::new(stream).poll_next(cx)) {
                    Some(Ok(bytes)) => {
                        *remaining = remaining.saturating_sub(bytes.len() as u64);
                        Poll::Ready(Some(Ok(Frame::data(bytes))))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
                    None if *remaining > 0 => {
                        // The file shrank after we sent its length; failing the
                        // body makes hyper abort the connection rather than
                        // send a response shorter than its Content-Length.
                        Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "file shrank while being served",
                        )))))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::Empty => true,
            EdgeBody::Full(chunk) => chunk.is_none(),
            EdgeBody::Upstream { body: incoming, .. } => incoming.is_end_stream(),
            EdgeBody::File { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::Empty => SizeHint::with_exact(0),
            EdgeBody::Full(chunk) => SizeHint::with_exact(chunk.as_ref().map_or(0, |b| b.len() as u64)),
            EdgeBody::Upstream { body: incoming, .. } => incoming.size_hint(),
            EdgeBody::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// Body of a request forwarded to an app.
pub(crate) enum ProxyBody {
    Empty,
    /// The client's body, cut off with [`BodyTooLarge`] once more than
    /// `remaining` bytes have arrived; each chunk passed on is added to `meter`
    /// (the traffic tap's count of bytes in), when the request is counted.
    Limited {
        body: Incoming,
        remaining: u64,
        meter: Option<BodyMeter>,
    },
}

/// The client sent more body than `max_request_body_bytes` allows.
#[derive(Debug)]
pub(crate) struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body exceeds the configured limit")
    }
}

impl StdError for BodyTooLarge {}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Limited { body, remaining, meter } => match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                        }
                        *remaining -= len;
                        if let Some(meter) = meter {
                            meter.add(len);
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Limited { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Limited { body, .. } => body.size_hint(),
        }
    }
}
