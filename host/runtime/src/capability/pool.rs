//! Connections for plugins' outgoing HTTP: connect to vetted addresses
//! only, TLS to the original name, keep-alive per plugin.
//!
//! The egress check ([`super::egress`]) resolves a request's name and vets
//! every address; this module connects to one of those addresses
//! ([`Upstream::addrs`]) and never resolves anything itself, so a second DNS
//! answer cannot point the connection somewhere else (DNS rebinding). For
//! `https` it does the TLS handshake itself: the server name (SNI and
//! certificate check) is the request's original host, verified against the
//! Mozilla roots of `webpki-roots`.
//!
//! Opening a connection per request costs a handshake on both ends.
//! Requests a plugin sends to the same upstream (scheme, name and vetted
//! address) reuse an idle HTTP/1.1 connection instead. Idle connections are
//! kept per plugin (one plugin's requests never travel on a connection
//! another plugin opened), at most [`IDLE_PER_KEY`] per upstream, for at
//! most [`IDLE_FOR`]. A connection goes back to the pool only once its
//! response body has been read to the end; a connection the upstream closed
//! meanwhile is dropped, and a request it refused before sending is retried
//! once on a fresh connection.
//!
//! Every request runs under [`Limits`]: connect (DNS, TCP and TLS), first
//! byte, between bytes, a total deadline covering the whole exchange
//! including the response body, and a cap on response body bytes. They
//! guard against a slow or endless upstream holding a plugin's call (and a
//! host worker) and against a huge response filling host memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use wasmtime_wasi_http::{Error, WasiBody};

use super::egress::Host;

/// Idle connections kept per plugin and upstream.
pub const IDLE_PER_KEY: usize = 32;
/// How long an idle connection is kept.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// Where a request goes: already matched and vetted.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub https: bool,
    /// The request's host: the TLS server name, and part of the pool key.
    pub host: Host,
    /// Vetted addresses, tried in order.
    pub addrs: Vec<SocketAddr>,
}

/// Time and size bounds of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// DNS, TCP connect and TLS handshake together.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Longest pause between response body frames.
    pub between_bytes: Duration,
    /// The whole exchange, response body included, ends by then.
    pub deadline: tokio::time::Instant,
    /// Largest response body, in bytes.
    pub max_response_bytes: u64,
}

/// The connection permits a request needs: the plugin's, for a new
/// connection (held by the connection until it closes), and the call's
/// in-flight permit (held until the response body is done or dropped).
pub struct Connections {
    pub plugin: Arc<tokio::sync::Semaphore>,
    /// The plugin's `max-connections`, for the refusal.
    pub max: u32,
    pub in_flight: tokio::sync::OwnedSemaphorePermit,
}

/// Why [`Pool::send`] did not get a response.
pub enum ConnectError {
    /// The plugin's open connections stayed at `max-connections`.
    PluginLimit {
        open: u32,
    },
    /// The host is out of descriptors or buffers (EMFILE, ENFILE, ...).
    HostExhausted(std::io::Error),
    Http(Error),
}

impl From<Error> for ConnectError {
    fn from(e: Error) -> ConnectError {
        ConnectError::Http(e)
    }
}

/// Whether a connect failed for lack of host resources rather than
/// anything the upstream did.
fn host_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Called once when a response body exceeds its cap.
pub type OnOversize = Box<dyn FnOnce(u64) + Send>;

type Key = (Arc<str>, bool, String, SocketAddr);

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
        evos_core::sync::lock(&self.idle)
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

    /// Close `plugin`'s idle connections, releasing their permits.
    fn evict(&self, plugin: &Arc<str>) {
        let mut idle = self.idle();
        idle.retain(|key, _| key.0 != *plugin);
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

    /// Send `request` (origin-form URI, headers final) for `plugin` to one
    /// of `upstream`'s vetted addresses, on an idle connection when one is
    /// open.
    pub async fn send(
        &self,
        plugin: Arc<str>,
        upstream: &Upstream,
        request: http::Request<WasiBody>,
        limits: Limits,
        on_oversize: OnOversize,
        conns: Connections,
    ) -> Result<http::Response<WasiBody>, ConnectError> {
        let name = upstream.host.to_string();
        let key_for =
            |addr: SocketAddr| -> Key { (plugin.clone(), upstream.https, name.clone(), addr) };
        let mut request = Some(request);
        let mut fresh = false;
        loop {
            let idle = upstream
                .addrs
                .iter()
                .find_map(|a| self.checkout(&key_for(*a)).map(|s| (s, *a)));
            let (mut sender, addr) = match idle {
                Some(found) => found,
                None => {
                    fresh = true;
                    let permit = self.connection_permit(&plugin, &conns, &limits).await?;
                    connect(upstream, &limits, permit).await?
                }
            };
            let key = key_for(addr);
            let Some(req) = request.take() else {
                return Err(ConnectError::Http(Error::InternalError(Some(
                    "the request was consumed before it was sent".into(),
                ))));
            };
            let first_byte = tokio::time::Instant::now() + limits.first_byte;
            let (until, late) = if first_byte < limits.deadline {
                (first_byte, Error::ConnectionReadTimeout)
            } else {
                (limits.deadline, Error::HttpResponseTimeout)
            };
            match tokio::time::timeout_at(until, sender.try_send_request(req)).await {
                Err(_) => return Err(late.into()),
                Ok(Ok(response)) => {
                    let (head, incoming) = response.into_parts();
                    let mut timeout =
                        tokio::time::interval(limits.between_bytes.max(Duration::from_nanos(1)));
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
                        deadline: Box::pin(tokio::time::sleep_until(limits.deadline)),
                        read: 0,
                        max: limits.max_response_bytes,
                        on_oversize: Some(on_oversize),
                        give_back,
                        _in_flight: conns.in_flight,
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
                    _ => return Err(Error::from(e.into_error()).into()),
                },
            }
        }
    }

    /// A permit for one more open connection of `plugin`: at once when
    /// there is one; else after closing the plugin's idle connections,
    /// waiting at most the connect budget.
    async fn connection_permit(
        &self,
        plugin: &Arc<str>,
        conns: &Connections,
        limits: &Limits,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ConnectError> {
        if let Ok(p) = conns.plugin.clone().try_acquire_owned() {
            return Ok(p);
        }
        self.evict(plugin);
        let until = (tokio::time::Instant::now() + limits.connect).min(limits.deadline);
        match tokio::time::timeout_at(until, conns.plugin.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ConnectError::PluginLimit { open: conns.max }),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Open a connection to the first vetted address that answers, TLS on top
/// for https, and drive it on its own task.
async fn connect(
    upstream: &Upstream,
    limits: &Limits,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(SendRequest<WasiBody>, SocketAddr), ConnectError> {
    let until = (tokio::time::Instant::now() + limits.connect).min(limits.deadline);
    let work = async {
        let mut last = None;
        let mut connected = None;
        for addr in &upstream.addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    connected = Some((s, *addr));
                    break;
                }
                Err(e) if host_exhausted(&e) => return Err(ConnectError::HostExhausted(e)),
                Err(e) => last = Some(e),
            }
        }
        let (tcp, addr) = match connected {
            Some(c) => c,
            None => {
                return Err(match last {
                    Some(e) => Error::Connect(e),
                    None => Error::DestinationNotFound,
                }
                .into());
            }
        };
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if upstream.https {
            let name = match &upstream.host {
                Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone())
                    .map_err(|_| ConnectError::Http(Error::DestinationNotFound))?,
                Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
            };
            let connector = tokio_rustls::TlsConnector::from(tls_config()?);
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::Http(Error::Tls(e)))?,
            )
        } else {
            Box::new(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Http(e.into()))?;
        // The connection lives as long as a sender for it does (a call's,
        // or the pool's); its task ends with it, and so does its permit.
        tokio::spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
        Ok((sender, addr))
    };
    match tokio::time::timeout_at(until, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::ConnectionTimeout.into()),
    }
}

/// The client TLS configuration: Mozilla's roots, rustls' safe defaults.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| Error::InternalError(Some(format!("TLS configuration: {e}"))))
}

/// A response body under the request's limits that hands its connection
/// back to the pool once read to the end.
struct PooledBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
    deadline: Pin<Box<tokio::time::Sleep>>,
    read: u64,
    max: u64,
    on_oversize: Option<OnOversize>,
    give_back: Option<(Pool, Key, SendRequest<WasiBody>)>,
    /// The call's in-flight permit, released with the body.
    _in_flight: tokio::sync::OwnedSemaphorePermit,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.give_back = None;
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
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
                if let Some(data) = frame.data_ref() {
                    self.read = self.read.saturating_add(data.len() as u64);
                    if self.read > self.max {
                        // The connection is mid-body: never reuse it.
                        self.give_back = None;
                        let max = self.max;
                        if let Some(report) = self.on_oversize.take() {
                            report(max);
                        }
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(max)))));
                    }
                }
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
