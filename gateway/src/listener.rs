//! The accept loop: HTTP/1.1 connections served until shutdown, then a
//! grace period for requests in flight.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::options::GatewayOptions;
use crate::server::ClientAddr;

/// Serve HTTP/1.1 connections from `listener`, answering each request with
/// `handler`, until `shutdown` resolves; then stop accepting and give
/// in-flight requests `options.shutdown_grace` to finish. The gateway and the
/// host's admin API both run on this loop.
pub async fn serve_http<H, F>(
    listener: TcpListener,
    options: GatewayOptions,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead
                    // of spinning, keep serving the connections we have.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer));
                    let answer = handler(request);
                    async move { Ok::<_, Infallible>(answer.await) }
                }),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; dropping the remaining connections");
        }
    }
}
