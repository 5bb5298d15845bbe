//! `sockets`: outgoing TCP connections through `wasi:sockets`, vetted by
//! the same egress engine as `http` ([`super::egress`]).
//!
//! Guards against exfiltration and SSRF over raw TCP, where no URL, no
//! `Host` header and no TLS name say where a connection goes: only the
//! address the guest connects to. So the host checks that address, at
//! connect time, against the manifest:
//!
//! | entry                          | grants connections to                                        |
//! |--------------------------------|--------------------------------------------------------------|
//! | `tcp://db.example.com:5432`    | the public addresses the name resolves to (host-side, now)   |
//! | `tcp://127.0.0.1:6379`         | that address (special-purpose addresses need such an entry)  |
//! | `tcp://[::1]:7000`             | an IPv6 address                                              |
//! | `tcp://[10.0.0.0/8]:5432`      | a CIDR range (brackets hold an IPv6 address or any CIDR)     |
//! | `tcp://[10.0.0.0/8]:*`         | any port (`*` must be written: a port is required)           |
//!
//! Addresses are vetted exactly as for `http` ([`super::egress::vet_address`]):
//! loopback, private, link-local, unique-local, CGNAT, ... only through an
//! IP/CIDR entry, cloud metadata only through an entry naming exactly that
//! address, unspecified, multicast and broadcast never. An IPv4-mapped IPv6
//! address is judged as the IPv4 address it carries.
//!
//! The guest never resolves names: `wasi:sockets/ip-name-lookup` is linked
//! (Rust's `std::net` imports it) but every lookup is refused, because a
//! lookup is itself a channel out (the name carries the data) and the
//! resolver has no allowlist. A plugin therefore connects to addresses it
//! is given (through `[config]` or its event); a name entry grants whatever
//! public addresses that name resolves to on the host when the guest
//! connects. Names are looked up with [`RESOLVE_TIMEOUT`].
//!
//! Only outgoing TCP is grantable. Binding to an explicit address,
//! listening and accepting are refused (the implicit bind of a connect, to
//! the unspecified address and port 0, is allowed). `udp://` entries are
//! refused at load; the UDP interfaces are linked with a granted `sockets`
//! (Rust's `std::net` imports them alongside TCP) but creating a UDP
//! socket always fails with `access-denied`.
//!
//! Every refused use reaches the call's report as a `sockets` refusal; the
//! guest sees `access-denied`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::{SocketError, SocketResult, UdpSocket};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSockets, WasiSocketsView as _};

use super::egress::{Cidr, Host, Scheme, normalize_host, vet_address};
use super::{CallContext, CallSetup, Capability, Grants, HasCapability, Views, record_refusal};
use crate::manifest::Manifest;
use crate::runtime::Refusal;
use crate::{Error, Result};

/// The `sockets` capability: outgoing TCP to vetted addresses.
pub struct Sockets;

impl Capability for Sockets {
    const NAME: &'static str = "sockets";
    const INTERFACES: &'static [&'static str] = &[
        "wasi:sockets/network",
        "wasi:sockets/instance-network",
        "wasi:sockets/tcp",
        "wasi:sockets/tcp-create-socket",
        "wasi:sockets/ip-name-lookup",
        "wasi:sockets/udp",
        "wasi:sockets/udp-create-socket",
    ];
    const PRIVILEGED: bool = true;
    const EXAMPLE: &'static str = "sockets = [\"tcp://db.example.com:5432\"]";
    /// Whether the call's manifest grants `sockets` (else the interfaces
    /// are linked inert), and the plugin's kind, for the refusals' text.
    type State = (bool, evos_core::Kind);

    fn granted(m: &Manifest) -> bool {
        !m.capabilities.sockets.is_empty()
    }

    fn link<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        link(linker, true)
    }

    /// Python's runtime imports every `wasi:sockets` interface.
    const INERT: bool = true;

    fn link_inert<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        link(linker, false)
    }

    fn state(call: &CallContext<'_>) -> (bool, evos_core::Kind) {
        (!call.grants.sockets.is_empty(), call.grants.kind)
    }

    fn prepare_wasi(grants: &Grants, setup: &mut CallSetup<'_>) -> Result<()> {
        prepare(grants, setup);
        Ok(())
    }
}

/// Interfaces linked with a `sockets` grant whose every use is refused:
/// Rust's `std::net` imports them alongside TCP.
pub const ALWAYS_REFUSED: &[&str] = &[
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// TCP connections one call may open: a call's sockets close with the
/// call, so this bounds what one plugin holds to this many per call in
/// flight (its `max-concurrency`), keeping a plugin from exhausting the
/// host's file descriptors.
pub const CONNECTS_PER_CALL: u32 = 16;

/// How long the host waits for one name entry to resolve when checking a
/// connection.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    /// A normalized name, resolved by the host at connect time.
    Name(String),
    /// An IP literal or CIDR: an explicit grant of that range.
    Addrs(Cidr),
}

/// One `sockets` entry, parsed once at manifest load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SocketRule {
    text: String,
    peer: Peer,
    /// `None` = any port (`:*`).
    port: Option<u16>,
}

impl TryFrom<String> for SocketRule {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for SocketRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SocketRule {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid sockets entry {text:?}: {why}; write e.g. \"tcp://db.example.com:5432\" or \"tcp://[10.0.0.0/8]:5432\""
            )
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("missing scheme (`tcp://`)"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => {}
            "udp" => {
                return Err(bad(
                    "UDP is not grantable: evos grants outgoing TCP connections only",
                ));
            }
            _ => return Err(bad("the scheme must be tcp")),
        }
        if rest.contains('@') {
            return Err(bad("userinfo (`user@`) is not allowed"));
        }
        let tail = match rest.strip_prefix('[') {
            Some(inner) => inner.split_once(']').map_or("", |(_, after)| after),
            None => rest,
        };
        if tail.contains(['/', '?', '#']) {
            return Err(bad("a TCP entry has no path, query or fragment"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((host, after)) => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if after.is_empty() => (host, None),
                    None => return Err(bad("expected `[address]:port`, nothing after the port")),
                },
                None => return Err(bad("unclosed `[`")),
            },
            None => match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            },
        };
        let port = match port {
            None => return Err(bad("a port is required (`:5432`, or `:*` for any port)")),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("invalid port"))?,
            ),
        };
        let peer = if rest.starts_with('[') {
            Peer::Addrs(Cidr::parse(host).map_err(|e| bad(&e))?)
        } else if host.contains('*') {
            return Err(bad(
                "wildcard names cannot be granted: the host resolves each name entry itself, so list every name",
            ));
        } else {
            match normalize_host(Scheme::Http, host).map_err(|e| bad(&e))? {
                Host::Name(name) => Peer::Name(name),
                Host::Ip(ip) if host == ip.to_string() => Peer::Addrs(Cidr::single(ip)),
                Host::Ip(ip) => {
                    return Err(bad(&format!(
                        "write the address {ip} in its usual form (IPv6 in brackets)"
                    )));
                }
            }
        };
        Ok(SocketRule {
            text: text.to_string(),
            peer,
            port,
        })
    }
}

impl SocketRule {
    /// Whether everything this entry allows is also allowed by `wider`:
    /// the same name, or an address range inside `wider`'s, on any port or
    /// the same one.
    pub fn covered_by(&self, wider: &SocketRule) -> bool {
        let peer = match (&wider.peer, &self.peer) {
            (Peer::Addrs(w), Peer::Addrs(n)) => w.covers(n),
            (Peer::Name(w), Peer::Name(n)) => w == n,
            _ => false,
        };
        let port = match (wider.port, self.port) {
            (None, _) => true,
            (Some(w), Some(n)) => w == n,
            (Some(_), None) => false,
        };
        peer && port
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// An IP/CIDR entry granting `ip` on `port` (`exact_only`: only an
    /// entry naming exactly `ip`).
    fn grants_addr(&self, ip: IpAddr, port: u16, exact_only: bool) -> bool {
        match &self.peer {
            Peer::Addrs(range) => {
                range.contains(ip) && (!exact_only || range.is_single()) && self.port_matches(port)
            }
            Peer::Name(_) => false,
        }
    }
}

/// One plugin's `sockets` policy, built once at load.
#[derive(Debug, Clone, Default)]
pub struct SocketPolicy {
    rules: Vec<SocketRule>,
}

impl SocketPolicy {
    pub fn new(rules: Vec<SocketRule>) -> SocketPolicy {
        SocketPolicy { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `Ok` when a guest may use `addr` for `use_`; otherwise why not.
    pub async fn check(
        &self,
        addr: SocketAddr,
        use_: SocketAddrUse,
    ) -> std::result::Result<(), String> {
        match use_ {
            SocketAddrUse::TcpConnect => self.check_connect(addr).await,
            // The implicit bind of a connect: the unspecified address, port 0.
            SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => Ok(()),
            SocketAddrUse::TcpBind => Err(format!(
                "binding a TCP socket to {addr} is refused: `sockets` grants outgoing connections only"
            )),
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => Err(format!(
                "listening for TCP connections (at {addr}) is refused: `sockets` grants outgoing connections only"
            )),
            _ => Err(format!(
                "UDP ({addr}) is refused: `sockets` grants outgoing TCP connections only"
            )),
        }
    }

    /// Whether some entry grants a TCP connection to `addr`: an IP/CIDR
    /// entry containing it, on its port, or a name entry on its port whose
    /// host-side resolution holds it; either way the address is vetted.
    pub async fn check_connect(&self, addr: SocketAddr) -> std::result::Result<(), String> {
        let ip = addr.ip().to_canonical();
        let port = addr.port();
        let target = SocketAddr::new(ip, port);
        let granted = |exact_only| {
            self.rules
                .iter()
                .any(|r| r.grants_addr(ip, port, exact_only))
        };
        let exact_entry = || format!("tcp://{}:{port}", Host::Ip(ip));
        if granted(false) {
            return vet_address(ip, &format!("{target} is"), granted, exact_entry);
        }
        let near = self.rules.iter().find(|r| match &r.peer {
            Peer::Addrs(range) => range.contains(ip),
            Peer::Name(_) => false,
        });
        let wrong_port = |rule: &SocketRule| {
            format!(
                "{target} is not in the sockets allowlist: `{rule}` names this address but a different port"
            )
        };
        // The vetting verdict for an address no entry names decides before
        // any lookup: never-reachable and special-purpose addresses fail
        // whatever a name resolves to.
        if let Err(why) = vet_address(ip, &format!("{target} is"), granted, exact_entry) {
            return Err(near.map_or(why, wrong_port));
        }
        let mut failures = Vec::new();
        for rule in &self.rules {
            let Peer::Name(name) = &rule.peer else {
                continue;
            };
            if !rule.port_matches(port) {
                continue;
            }
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(mut found)) => {
                    if found.any(|a| a.ip().to_canonical() == ip) {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => failures.push(format!("{name}: {e}")),
                Err(_) => failures.push(format!("{name}: no answer within {RESOLVE_TIMEOUT:?}")),
            }
        }
        let mut why = match near {
            Some(rule) => wrong_port(rule),
            None => format!(
                "{target} is not in the sockets allowlist (no IP/CIDR entry holds it and no name entry on port {port} resolves to it)"
            ),
        };
        if !failures.is_empty() {
            why.push_str(&format!("; lookups failed: {}", failures.join(", ")));
        }
        Err(why)
    }
}

/// Configure the call's WASI context: TCP through the policy's address
/// check, UDP and name lookups off. Without a grant everything is off
/// (the inert bindings refuse before wasmtime's would be reached).
fn prepare(grants: &Grants, setup: &mut CallSetup<'_>) {
    if grants.sockets.is_empty() {
        setup
            .wasi
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        return;
    }
    let policy = grants.sockets.clone();
    let refusals = setup.socket_refusals.clone();
    let shadow = setup.shadow.cloned();
    let connects = Arc::new(std::sync::atomic::AtomicU32::new(0));
    setup
        .wasi
        .allow_tcp(true)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(move |addr, use_| {
            let (policy, refusals, shadow) = (policy.clone(), refusals.clone(), shadow.clone());
            let over = matches!(use_, SocketAddrUse::TcpConnect)
                && connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    >= CONNECTS_PER_CALL;
            Box::pin(async move {
                if over {
                    refusals.push(
                        "sockets",
                        format!(
                            "connect to {addr} refused: a call may open at most {CONNECTS_PER_CALL} TCP connections"
                        ),
                    );
                    return false;
                }
                match policy.check(addr, use_).await {
                    // A shadow's connections are granted but not made.
                    Ok(()) if matches!(use_, SocketAddrUse::TcpConnect) && shadow.is_some() => {
                        if let Some(suppressed) = &shadow {
                            suppressed.push("sockets", format!("suppressed in shadow: connect to {addr}"));
                        }
                        false
                    }
                    Ok(()) => true,
                    Err(why) => {
                        refusals.push("sockets", why);
                        false
                    }
                }
            })
        });
}

/// What the refusing bindings see: the call's refusals, whether `sockets`
/// is granted, and the plugin's kind.
struct Refuse<'a> {
    refusals: &'a mut Vec<Refusal>,
    granted: bool,
    kind: evos_core::Kind,
}

impl Refuse<'_> {
    /// Record `what` as refused, with why: the grant's limits when
    /// `sockets` is granted, the missing grant when it is not.
    fn refuse(&mut self, what: &str, granted_why: &str) {
        let why = if self.granted {
            granted_why.to_string()
        } else {
            super::not_granted(self.kind, Sockets::NAME)
        };
        record_refusal(
            self.refusals,
            "sockets",
            format!("{what} is refused: {why}"),
        );
    }
}

struct HasRefuse;

impl HasData for HasRefuse {
    type Data<'a> = Refuse<'a>;
}

/// Only `convert_error_code` is used: the refusing bindings' errors go
/// through it. The `network` interface itself is wasmtime's.
impl sockets::network::Host for Refuse<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(
        &mut self,
        _err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(None)
    }
}

impl sockets::network::HostNetwork for Refuse<'_> {
    fn drop(&mut self, _network: Resource<Network>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl sockets::udp_create_socket::Host for Refuse<'_> {
    async fn create_udp_socket(
        &mut self,
        _family: IpAddressFamily,
    ) -> SocketResult<Resource<UdpSocket>> {
        self.refuse(
            "creating a UDP socket",
            "`sockets` grants outgoing TCP connections only",
        );
        Err(ErrorCode::AccessDenied.into())
    }
}

/// Reached only when `sockets` is not granted: with a grant, wasmtime's
/// binding creates the socket and the address check vets each connect.
impl sockets::tcp_create_socket::Host for Refuse<'_> {
    fn create_tcp_socket(
        &mut self,
        _family: IpAddressFamily,
    ) -> SocketResult<Resource<wasmtime_wasi::p2::TcpSocket>> {
        self.refuse("creating a TCP socket", "");
        Err(ErrorCode::AccessDenied.into())
    }
}

impl sockets::ip_name_lookup::Host for Refuse<'_> {
    fn resolve_addresses(
        &mut self,
        _network: Resource<Network>,
        name: String,
    ) -> SocketResult<Resource<sockets::ip_name_lookup::ResolveAddressStream>> {
        let mut name = name;
        name.truncate(name.floor_char_boundary(253));
        self.refuse(
            &format!("looking up {name:?}"),
            "plugins connect to addresses they are given; a `sockets` name entry is resolved by the host",
        );
        Err(ErrorCode::AccessDenied.into())
    }
}

impl sockets::ip_name_lookup::HostResolveAddressStream for Refuse<'_> {
    fn resolve_next_address(
        &mut self,
        _stream: Resource<sockets::ip_name_lookup::ResolveAddressStream>,
    ) -> SocketResult<Option<sockets::network::IpAddress>> {
        Err(ErrorCode::AccessDenied.into())
    }

    fn subscribe(
        &mut self,
        _stream: Resource<sockets::ip_name_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        Err(wasmtime::format_err!("no name lookup was ever started"))
    }

    fn drop(
        &mut self,
        _stream: Resource<sockets::ip_name_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Link `wasi:sockets`. `granted`: TCP sockets are created by wasmtime and
/// each connect vetted; inert (not granted): creating any socket and every
/// lookup are refused, so the `tcp` and `udp` methods, which need a socket,
/// are never reached.
fn link<T: Views>(linker: &mut Linker<T>, granted: bool) -> Result<()> {
    let l = linker;
    let options = sockets::network::LinkOptions::default();
    fn refuse<T: Views>(t: &mut T) -> Refuse<'_> {
        let cap = HasCapability::<Sockets>::capability(t);
        let (granted, kind) = *cap.state;
        Refuse {
            refusals: cap.refusals,
            granted,
            kind,
        }
    }
    (|| -> wasmtime::Result<()> {
        sockets::network::add_to_linker::<T, WasiSockets>(l, &options, T::sockets)?;
        sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        if granted {
            sockets::tcp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        } else {
            sockets::tcp_create_socket::add_to_linker::<T, HasRefuse>(l, refuse::<T>)?;
        }
        sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
        sockets::udp_create_socket::add_to_linker::<T, HasRefuse>(l, refuse::<T>)?;
        sockets::ip_name_lookup::add_to_linker::<T, HasRefuse>(l, refuse::<T>)?;
        Ok(())
    })()
    .map_err(|e| Error::wasmtime("linking wasi:sockets", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> SocketPolicy {
        SocketPolicy::new(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    async fn connect(rules: &[&str], addr: &str) -> std::result::Result<(), String> {
        policy(rules).check_connect(addr.parse().unwrap()).await
    }

    #[test]
    fn entry_forms() {
        for (entry, peer, port) in [
            ("tcp://db.example.com:5432", "db.example.com", Some(5432)),
            ("TCP://DB.Example.COM.:5432", "db.example.com", Some(5432)),
            ("tcp://127.0.0.1:6379", "127.0.0.1", Some(6379)),
            ("tcp://[::1]:7000", "::1", Some(7000)),
            ("tcp://[10.0.0.0/8]:5432", "10.0.0.0/8", Some(5432)),
            ("tcp://[fd00::/8]:*", "fd00::/8", None),
        ] {
            let rule: SocketRule = entry.parse().unwrap();
            let shown = match &rule.peer {
                Peer::Name(n) => n.clone(),
                Peer::Addrs(c) => c.to_string(),
            };
            assert_eq!((shown.as_str(), rule.port), (peer, port), "{entry}");
            assert_eq!(rule.to_string(), entry);
        }
    }

    #[test]
    fn bad_entries_are_explained() {
        for (bad, why) in [
            ("udp://10.0.0.1:53", "UDP is not grantable"),
            ("http://db.example.com:80", "the scheme must be tcp"),
            ("db.example.com:5432", "missing scheme"),
            ("tcp://db.example.com", "a port is required"),
            ("tcp://[::1]", "a port is required"),
            ("tcp://db.example.com:5432/x", "no path"),
            ("tcp://db.example.com/x", "no path"),
            ("tcp://u@db.example.com:5432", "userinfo"),
            ("tcp://*.example.com:5432", "wildcard names"),
            ("tcp://db.example.com:0", "invalid port"),
            ("tcp://db.example.com:99999", "invalid port"),
            ("tcp://127.1:80", "usual form"),
            ("tcp://[10.0.0.1/8]:80", "10.0.0.0/8"),
            ("tcp://[::ffff:127.0.0.1]:80", "IPv4 form"),
            ("tcp://[::1:80", "unclosed"),
            ("tcp://[::1]x:80", "expected `[address]:port`"),
        ] {
            let e = bad.parse::<SocketRule>().unwrap_err();
            assert!(
                e.contains("invalid sockets entry") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[tokio::test]
    async fn addresses_need_an_entry_on_the_same_port() {
        let r = [
            "tcp://127.0.0.1:6379",
            "tcp://[10.0.0.0/8]:5432",
            "tcp://[::1]:7000",
        ];
        assert!(connect(&r, "127.0.0.1:6379").await.is_ok());
        assert!(connect(&r, "[::ffff:127.0.0.1]:6379").await.is_ok());
        assert!(connect(&r, "10.1.2.3:5432").await.is_ok());
        assert!(connect(&r, "[::1]:7000").await.is_ok());
        let e = connect(&r, "127.0.0.1:6380").await.unwrap_err();
        assert!(e.contains("names this address but a different port"), "{e}");
        assert!(connect(&r, "127.0.0.2:6379").await.is_err());
        assert!(connect(&r, "11.0.0.1:5432").await.is_err());
        assert!(connect(&r, "[::1]:6379").await.is_err());
    }

    #[tokio::test]
    async fn names_grant_only_public_addresses_they_resolve_to() {
        // `localhost` resolves to loopback: vetted, so refused.
        for addr in ["127.0.0.1:7000", "[::ffff:127.0.0.1]:7000", "[::1]:7000"] {
            let e = connect(&["tcp://localhost:7000"], addr).await.unwrap_err();
            assert!(e.contains("a loopback address"), "{addr}: {e}");
        }
        // A public address the name does not resolve to.
        let e = connect(&["tcp://localhost:7000"], "93.184.216.34:7000")
            .await
            .unwrap_err();
        assert!(e.contains("not in the sockets allowlist"), "{e}");
    }

    #[tokio::test]
    async fn metadata_and_never_reachable_addresses() {
        let broad = [
            "tcp://[169.254.0.0/16]:*",
            "tcp://[0.0.0.0/0]:*",
            "tcp://[::/0]:*",
        ];
        let e = connect(&broad, "169.254.169.254:80").await.unwrap_err();
        assert!(
            e.contains("cloud metadata") && e.contains("tcp://169.254.169.254:80"),
            "{e}"
        );
        assert!(connect(&broad, "[fd00:ec2::254]:80").await.is_err());
        assert!(connect(&broad, "169.254.1.1:80").await.is_ok());
        assert!(
            connect(&["tcp://169.254.169.254:80"], "169.254.169.254:80")
                .await
                .is_ok()
        );
        for never in [
            "0.0.0.0:80",
            "255.255.255.255:80",
            "224.0.0.1:80",
            "[ff02::1]:80",
        ] {
            let e = connect(&broad, never).await.unwrap_err();
            assert!(e.contains("never reachable"), "{never}: {e}");
        }
    }

    #[tokio::test]
    async fn only_outgoing_tcp_is_allowed() {
        let p = policy(&["tcp://[0.0.0.0/0]:*"]);
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(p.check(any, SocketAddrUse::TcpBind).await.is_ok());
        assert!(
            p.check("[::]:0".parse().unwrap(), SocketAddrUse::TcpBind)
                .await
                .is_ok()
        );
        let e = p
            .check("127.0.0.1:8080".parse().unwrap(), SocketAddrUse::TcpBind)
            .await
            .unwrap_err();
        assert!(e.contains("binding a TCP socket"), "{e}");
        assert!(
            p.check("0.0.0.0:8080".parse().unwrap(), SocketAddrUse::TcpBind)
                .await
                .is_err()
        );
        assert!(p.check(any, SocketAddrUse::TcpListen).await.is_err());
        assert!(p.check(any, SocketAddrUse::UdpBind).await.is_err());
        assert!(
            p.check("8.8.8.8:53".parse().unwrap(), SocketAddrUse::UdpSend)
                .await
                .is_err()
        );
    }
}
