//! The outgoing connections an invocation opened, closed when it ends.
//!
//! A connection stays open while the guest holds its answer's body. A
//! fresh instance drops every body with its store; a reused one keeps its
//! resource table between invocations, and with it whatever bodies the
//! guest never finished (a reused instance kept 2,000 streaming
//! connections open for over a minute after its requests ended). So each
//! body is held in a slot the invocation can empty: [`OpenConnections::close_all`]
//! at its end drops them (closing their connections) and gives their
//! permits back; a guest reading one later gets `connection-terminated`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;
use wasmtime_wasi_http::{Error, WasiBody};

use crate::resilience::connections::ConnectionPermit;

/// An answer's body and the permit of its connection.
struct Held {
    body: WasiBody,
    _permit: ConnectionPermit,
}

type Slot = Arc<Mutex<Option<Held>>>;

/// The connections one invocation opened that may still be open: those
/// still connecting or waiting for their answer's head, and the bodies of
/// those answered.
#[derive(Default)]
pub struct OpenConnections(Arc<Mutex<Open>>);

#[derive(Default)]
struct Open {
    connecting: Vec<AbortHandle>,
    bodies: Vec<Weak<Mutex<Option<Held>>>>,
}

impl OpenConnections {
    /// A handle for the requests of this invocation to register with.
    pub(super) fn share(&self) -> OpenConnections {
        OpenConnections(self.0.clone())
    }

    /// `body`, read through a slot this invocation can empty; `permit` is
    /// given back when it is read to its end, dropped, or closed.
    pub(super) fn hold(&self, body: WasiBody, permit: ConnectionPermit) -> WasiBody {
        let slot = Arc::new(Mutex::new(Some(Held { body, _permit: permit })));
        let mut open = lock(&self.0);
        open.bodies.retain(|held| held.strong_count() > 0);
        open.bodies.push(Arc::downgrade(&slot));
        HeldBody { slot }.boxed_unsync()
    }

    /// `task` connects and waits for an answer's head: aborted (closing
    /// its connection) if the invocation ends first.
    pub(super) fn connecting(&self, task: AbortHandle) {
        let mut open = lock(&self.0);
        open.connecting.retain(|task| !task.is_finished());
        open.connecting.push(task);
    }

    /// Close every connection still open.
    pub fn close_all(&self) {
        let open = std::mem::take(&mut *lock(&self.0));
        open.connecting.iter().for_each(AbortHandle::abort);
        for slot in open.bodies.iter().filter_map(Weak::upgrade) {
            lock(&slot).take();
        }
    }

    /// How many bodies may still be open.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.0).bodies.iter().filter(|held| held.strong_count() > 0).count()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A body read through its slot.
struct HeldBody {
    slot: Slot,
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let mut slot = lock(&self.slot);
        let Some(held) = slot.as_mut() else {
            return Poll::Ready(Some(Err(Error::ConnectionTerminated)));
        };
        let frame = Pin::new(&mut held.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // Read to its end: the connection is done, its permit too.
            slot.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.slot).as_ref().is_none_or(|held| held.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.slot).as_ref().map_or_else(SizeHint::default, |held| held.body.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::connections::HostConnections;

    #[tokio::test]
    async fn closing_ends_the_bodies_and_gives_the_permits_back() {
        let connections = HostConnections::new(10).component("a", 2);
        let open = OpenConnections::default();
        let body = || {
            http_body_util::Full::new(Bytes::from_static(b"hi"))
                .map_err(|n| match n {})
                .boxed_unsync()
        };
        let read = open.hold(body(), connections.open().unwrap());
        let mut kept = open.hold(body(), connections.open().unwrap());
        assert_eq!(read.collect().await.unwrap().to_bytes(), "hi");
        assert_eq!((connections.open_now(), open.len()), (1, 1));
        open.close_all();
        assert_eq!(connections.open_now(), 0);
        let error = kept.frame().await.unwrap().unwrap_err();
        assert!(matches!(error, Error::ConnectionTerminated), "{error:?}");
    }
}
