//! Keep-alive connections for plugins' outgoing plain-HTTP requests.
//!
//! Opening a TCP connection per request costs a handshake on both ends and,
//! for many upstreams, a thread or task on theirs. Requests a plugin sends
//! to the same `host:port` reuse an idle HTTP/1.1 connection instead. Idle
//! connections are kept per plugin (one plugin's requests never travel on a
//! connection another plugin opened), at most [`IDLE_PER_KEY`] per upstream,
//! for at most [`IDLE_FOR`]. A connection goes back to the pool only once
//! its response body has been read to the end; a connection the upstream
//! closed meanwhile is dropped, and a request it refused before sending is
//! retried once on a fresh connection.
//!
//! Connect, first-byte and between-bytes timeouts apply as for a fresh
//! connection. The allowlist is checked before a request gets here.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Idle connections kept per plugin and upstream.
pub const IDLE_PER_KEY: usize = 32;
/// How long an idle connection is kept.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

type Key = (Arc<str>, String);

struct Idle {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

/// The pool of idle connections; cheap to clone.
#[derive(Clone, Default)]
pub struct Pool {
    idle: Arc<Mutex<HashMap<Key, Vec<Idle>>>>,
}

impl Pool {
    fn idle(&self) -> MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        match self.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// An idle, open connection to `key`'s upstream, if there is one.
    fn checkout(&self, key: &Key) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle();
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if conn.since.elapsed() < IDLE_FOR && conn.sender.is_ready() {
                return Some(conn.sender);
            }
        }
        None
    }

    fn checkin(&self, key: Key, sender: SendRequest<WasiBody>) {
        if !sender.is_ready() {
            return;
        }
        let mut idle = self.idle();
        let list = idle.entry(key).or_default();
        list.retain(|c| c.since.elapsed() < IDLE_FOR && !c.sender.is_closed());
        if list.len() < IDLE_PER_KEY {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Send `request` (absolute `http://` URI) for `plugin`, on an idle
    /// connection when one is open.
    pub async fn send(
        &self,
        plugin: Arc<str>,
        mut request: http::Request<WasiBody>,
        options: RequestOptions,
    ) -> Result<http::Response<WasiBody>, Error> {
        let uri = request.uri();
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        // On the wire the request names only its path; the upstream is the
        // connection's.
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned();
        *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
        let key: Key = (plugin, address);
        let connect_timeout = options.connect_timeout.unwrap_or(Duration::from_secs(30));
        let first_byte = options
            .first_byte_timeout
            .unwrap_or(Duration::from_secs(30));
        let between_bytes = options
            .between_bytes_timeout
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_nanos(1));

        let mut request = Some(request);
        let mut fresh = false;
        loop {
            let mut sender = match self.checkout(&key) {
                Some(s) => s,
                None => {
                    fresh = true;
                    connect(&key.1, connect_timeout).await?
                }
            };
            let Some(req) = request.take() else {
                return Err(Error::InternalError(Some(
                    "the request was consumed before it was sent".into(),
                )));
            };
            let sent = tokio::time::timeout(first_byte, sender.try_send_request(req)).await;
            match sent {
                Err(_) => return Err(Error::ConnectionReadTimeout),
                Ok(Ok(response)) => {
                    let (head, incoming) = response.into_parts();
                    let mut timeout = tokio::time::interval(between_bytes);
                    timeout.reset();
                    let give_back = if incoming.is_end_stream() {
                        // Nothing to read: the connection is free now.
                        self.checkin(key, sender);
                        None
                    } else {
                        Some((self.clone(), key, sender))
                    };
                    let body = PooledBody {
                        incoming,
                        timeout,
                        give_back,
                    };
                    return Ok(http::Response::from_parts(
                        head,
                        http_body_util::BodyExt::boxed_unsync(body),
                    ));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // Not sent: the idle connection was no longer usable.
                    // Retry once, on a fresh connection.
                    Some(req) if !fresh => request = Some(req),
                    _ => return Err(Error::from(e.into_error())),
                },
            }
        }
    }
}

/// Open a connection to `address` and drive it on its own task.
async fn connect(address: &str, timeout: Duration) -> Result<SendRequest<WasiBody>, Error> {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await
    {
        Ok(stream) => stream.map_err(Error::Connect)?,
        Err(_) => return Err(Error::ConnectionTimeout),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = tokio::time::timeout(
        timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The connection lives as long as a sender for it does (a call's, or
    // the pool's); its task ends with it.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A response body with the between-bytes timeout that hands its
/// connection back to the pool once read to the end.
struct PooledBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
    give_back: Option<(Pool, Key, SendRequest<WasiBody>)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some((pool, key, sender)) = self.give_back.take() {
                    pool.checkin(key, sender);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.give_back = None;
                let e = if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                };
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match self.timeout.poll_tick(cx) {
                Poll::Ready(_) => {
                    self.give_back = None;
                    Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
