//! A response stream that finishes its request's audit record when it
//! ends, fails, or is dropped by a client that went away — for every
//! front end that streams (Flight messages, HTTP bodies).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tonic::{Code, Status};

use super::AuditHandle;

/// `inner`, counting the bytes of its items with `size`.
pub struct AuditedStream<St, T> {
    inner: Pin<Box<St>>,
    handle: AuditHandle,
    size: fn(&T) -> usize,
    bytes: u64,
    done: bool,
}

impl<St, T> AuditedStream<St, T> {
    /// Watches `inner` for `handle`'s request.
    pub fn new(inner: St, handle: AuditHandle, size: fn(&T) -> usize) -> Self {
        crate::telemetry::stream_open(1);
        Self {
            inner: Box::pin(inner),
            handle,
            size,
            bytes: 0,
            done: false,
        }
    }
}

impl<St, T> Stream for AuditedStream<St, T>
where
    St: Stream<Item = Result<T, Status>>,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = this.inner.as_mut().poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(message))) => this.bytes += (this.size)(message) as u64,
            Poll::Ready(Some(Err(status))) => {
                this.done = true;
                this.handle
                    .finish(status.code(), status.message(), this.bytes);
            }
            Poll::Ready(None) => {
                this.done = true;
                this.handle.finish(Code::Ok, "", this.bytes);
            }
            Poll::Pending => {}
        }
        item
    }
}

impl<St, T> Drop for AuditedStream<St, T> {
    fn drop(&mut self) {
        crate::telemetry::stream_open(-1);
        if !self.done {
            self.handle.finish(
                Code::Cancelled,
                "the client closed the stream before its end",
                self.bytes,
            );
        }
    }
}
