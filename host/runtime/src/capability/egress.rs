//! The egress allowlist: which outgoing HTTP requests a plugin may make, and
//! which network addresses they may reach. `sockets` (outgoing TCP) uses the
//! same host normalization, CIDR entries and address vetting
//! ([`vet_address`]); see [`super::sockets`].
//!
//! Guards against exfiltration and server-side request forgery (SSRF). Both
//! the manifest's entries and every request URL are normalized the same way
//! (WHATWG URL parsing by the `url` crate), so spelling tricks cannot make a
//! request look like something it is not:
//!
//! - **host**: lowercased, IDNA names turned into punycode
//!   (`bücher.example` → `xn--bcher-kva.example`), percent-encoding decoded,
//!   one trailing dot dropped; IPv4 literals in any form (`127.1`,
//!   `0x7f.1`, `2130706433`, `0177.0.0.1`) become the address they denote
//!   and IPv4-mapped IPv6 (`[::ffff:127.0.0.1]`) the IPv4 address.
//! - **port**: explicit, or the scheme's default (80, 443). Rules name the
//!   scheme and the port, so `http://host:443` never matches `https://host`.
//! - **path**: dot-segments resolved (also percent-encoded ones, `%2e%2e`),
//!   percent-encoded unreserved characters decoded (`%76` → `v`), other
//!   escapes upper-cased. A path with an encoded slash or backslash (`%2F`,
//!   `%5C`), an encoded NUL (`%00`) or a double encoding (`%25` followed by
//!   two hex digits) is refused: upstream servers disagree on how to decode
//!   those, which is how a request escapes a path prefix. The request goes
//!   out with the normalized path, exactly what was matched.
//! - **userinfo**: a request URL with `user@` (even empty) is refused, so
//!   `http://allowed@evil/` cannot pass for `allowed`.
//!
//! Accepted allowlist entries (`[capabilities] http`):
//!
//! | entry                                 | matches                                                  |
//! |---------------------------------------|----------------------------------------------------------|
//! | `https://api.example.com`             | that name, port 443, any path                            |
//! | `https://api.example.com:8443/v1/*`   | port 8443, paths starting `/v1/`                         |
//! | `https://*.example.com/status`        | any subdomain (not `example.com`), exactly `/status`     |
//! | `http://127.0.0.1:*/hooks/*`          | that address, any port, paths starting `/hooks/`         |
//! | `http://[::1]:8080/*`                 | an IPv6 address                                          |
//! | `http://[10.0.0.0/8]:8080/*`          | a CIDR range (brackets hold an IPv6 address or any CIDR) |
//!
//! A name in a rule is resolved by the host, never by the guest, and every
//! address it resolves to is vetted ([`classify`]): loopback, private,
//! link-local, unique-local, carrier-grade NAT, documentation and other
//! special-purpose ranges, and IPv6 forms embedding such an IPv4 address
//! (6to4, NAT64, IPv4-compatible), are refused unless an IP or CIDR entry
//! grants the address for the same scheme, port and path. Cloud metadata
//! endpoints (`169.254.169.254`, `fd00:ec2::254`, `100.100.100.200`,
//! `168.63.129.16`, ...) need an entry naming exactly that address; a CIDR
//! that merely contains one does not grant it. Unspecified, multicast,
//! broadcast and reserved addresses are never reachable. Addresses that
//! fail vetting are dropped; a request whose name resolves to none that
//! pass is refused. The connection then goes to a vetted address, not to
//! the name again, so a second DNS answer cannot rebind it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Deserialize;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn parse(s: &str) -> Option<Scheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// An address range: one address (`prefix` = full length) or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Exactly one address (IPv4-mapped IPv6 as its IPv4 address).
    pub fn single(addr: IpAddr) -> Cidr {
        let addr = addr.to_canonical();
        Cidr {
            addr,
            prefix: max_prefix(addr),
        }
    }

    pub fn is_single(&self) -> bool {
        self.prefix == max_prefix(self.addr)
    }

    /// Whether every address of `other` lies in this range.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(other.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// `10.0.0.0/8`, `fd00::/8` or one address. Bits set after the prefix
    /// and IPv4-mapped IPv6 are refused with the spelling to use instead.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        if let IpAddr::V6(v6) = addr
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(format!(
                "write the IPv4-mapped address {addr} in its IPv4 form"
            ));
        }
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix length {p:?} (0 to {max})"))?,
        };
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "{text} has bits set after the prefix; write {network}/{prefix}"
            ));
        }
        Ok(cidr)
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A normalized name.
    Name(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Subdomains(String),
    /// An IP literal or CIDR: an explicit grant of that range.
    Addrs(Cidr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Any,
    Prefix(String),
    Exact(String),
}

/// One allowlist entry, parsed once at manifest load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpRule {
    text: String,
    scheme: Scheme,
    host: HostPattern,
    /// `None` = any port.
    port: Option<u16>,
    path: PathPattern,
}

impl TryFrom<String> for HttpRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HttpRule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid http allowlist entry {text:?}: {why}; write e.g. \"https://api.example.com:443/v1/*\""
            )
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("missing scheme"))?;
        let scheme =
            Scheme::parse(scheme).ok_or_else(|| bad("the scheme must be http or https"))?;
        // Brackets may hold a CIDR, whose `/` is not the path's.
        let search_from = if rest.starts_with('[') {
            rest.find(']').ok_or_else(|| bad("unclosed `[`"))?
        } else {
            0
        };
        let (authority, path) = match rest[search_from..].find('/') {
            Some(i) => rest.split_at(search_from + i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("userinfo (`user@`) is not allowed"));
        }
        if path.contains(['?', '#']) {
            return Err(bad(
                "query strings and fragments are not matched; end the entry at the path",
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((host, after)) if after.is_empty() || after.starts_with(':') => {
                    (host, after.strip_prefix(':'))
                }
                _ => return Err(bad("expected `[address]` or `[address]:port`")),
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("invalid port"))?,
            ),
        };
        let host = if authority.starts_with('[') {
            HostPattern::Addrs(Cidr::parse(host).map_err(|e| bad(&e))?)
        } else if let Some(base) = host.strip_prefix("*.") {
            match normalize_host(scheme, base).map_err(|e| bad(&e))? {
                Host::Name(base) => HostPattern::Subdomains(format!(".{base}")),
                Host::Ip(_) => return Err(bad("`*.` needs a name, not an address")),
            }
        } else if host.contains('*') {
            return Err(bad(
                "`*` is only allowed as the first label (`*.example.com`)",
            ));
        } else {
            match normalize_host(scheme, host).map_err(|e| bad(&e))? {
                Host::Name(name) => HostPattern::Name(name),
                Host::Ip(ip) if host == ip.to_string() => HostPattern::Addrs(Cidr::single(ip)),
                Host::Ip(ip) => {
                    return Err(bad(&format!(
                        "write the address {ip} in its usual form (IPv6 in brackets)"
                    )));
                }
            }
        };
        let path = match path {
            "" | "/*" => PathPattern::Any,
            p if p.ends_with('*') => {
                let prefix = &p[..p.len() - 1];
                if prefix.contains('*') {
                    return Err(bad("`*` is only allowed at the end of the path"));
                }
                PathPattern::Prefix(normalize_entry_path(scheme, prefix).map_err(|e| bad(&e))?)
            }
            p if p.contains('*') => return Err(bad("`*` is only allowed at the end of the path")),
            p => PathPattern::Exact(normalize_entry_path(scheme, p).map_err(|e| bad(&e))?),
        };
        Ok(HttpRule {
            text: text.to_string(),
            scheme,
            host,
            port,
            path,
        })
    }
}

impl HttpRule {
    /// Whether this entry names addresses (an IP literal or CIDR): the only
    /// entries that reach loopback, private, link-local and metadata
    /// addresses, so the ones a deployer needs approval for.
    pub fn names_addresses(&self) -> bool {
        matches!(self.host, HostPattern::Addrs(_))
    }

    /// Whether everything this entry allows is also allowed by `wider`:
    /// same scheme, a host range or name set that includes this one's, any
    /// port or the same, and a path pattern that includes this one's.
    pub fn covered_by(&self, wider: &HttpRule) -> bool {
        let host = match (&wider.host, &self.host) {
            (HostPattern::Addrs(w), HostPattern::Addrs(n)) => w.covers(n),
            (HostPattern::Name(w), HostPattern::Name(n)) => w == n,
            (HostPattern::Subdomains(w), HostPattern::Name(n) | HostPattern::Subdomains(n)) => {
                n.ends_with(w.as_str())
            }
            _ => false,
        };
        let port = match (wider.port, self.port) {
            (None, _) => true,
            (Some(w), Some(n)) => w == n,
            (Some(_), None) => false,
        };
        let path = match (&wider.path, &self.path) {
            (PathPattern::Any, _) => true,
            (PathPattern::Prefix(w), PathPattern::Prefix(n) | PathPattern::Exact(n)) => {
                n.starts_with(w.as_str())
            }
            (PathPattern::Exact(w), PathPattern::Exact(n)) => w == n,
            _ => false,
        };
        self.scheme == wider.scheme && host && port && path
    }

    fn matches_host(&self, host: &Host) -> bool {
        match (&self.host, host) {
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Subdomains(suffix), Host::Name(h)) => h.ends_with(suffix.as_str()),
            (HostPattern::Addrs(range), Host::Ip(ip)) => range.contains(*ip),
            _ => false,
        }
    }

    /// Scheme, port and path match (the host is checked separately).
    fn matches_rest(&self, target: &Target) -> bool {
        self.scheme == target.scheme
            && self.port.is_none_or(|p| p == target.port)
            && match &self.path {
                PathPattern::Any => true,
                PathPattern::Prefix(p) => target.path.starts_with(p.as_str()),
                PathPattern::Exact(p) => target.path == *p,
            }
    }

    /// Whether this rule explicitly grants `ip` for `target`'s scheme, port
    /// and path. Metadata addresses need a rule naming exactly them.
    fn grants(&self, target: &Target, ip: IpAddr, exact_only: bool) -> bool {
        match &self.host {
            HostPattern::Addrs(range) => {
                range.contains(ip)
                    && (!exact_only || range.is_single())
                    && self.matches_rest(target)
            }
            _ => false,
        }
    }
}

/// A request's host after normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// Normalize a host the way a request's host is: WHATWG host parsing
/// (case, IDNA, percent-decoding, IPv4 forms), then one trailing dot off.
pub fn normalize_host(scheme: Scheme, host: &str) -> Result<Host, String> {
    let url = url::Url::parse(&format!("{}://{host}/", scheme.as_str()))
        .map_err(|e| format!("invalid host {host:?}: {e}"))?;
    host_of(&url)
}

fn host_of(url: &url::Url) -> Result<Host, String> {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            if d.is_empty() || d.starts_with('.') || d.ends_with('.') || d.contains("..") {
                return Err(format!("invalid host {d:?}"));
            }
            Ok(Host::Name(d.to_string()))
        }
        Some(url::Host::Ipv4(a)) => Ok(Host::Ip(IpAddr::V4(a))),
        Some(url::Host::Ipv6(a)) => Ok(Host::Ip(IpAddr::V6(a).to_canonical())),
        None => Err("the URL has no host".into()),
    }
}

fn normalize_entry_path(scheme: Scheme, path: &str) -> Result<String, String> {
    let url = url::Url::parse(&format!("{}://h{path}", scheme.as_str()))
        .map_err(|e| format!("invalid path {path:?}: {e}"))?;
    canonical_path(url.path())
}

/// Finish normalizing a path the `url` crate has parsed (dot-segments
/// already resolved): decode escaped unreserved characters, upper-case the
/// other escapes, refuse escapes servers decode inconsistently.
pub fn canonical_path(path: &str) -> Result<String, String> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            let c = hi << 4 | lo;
            match c {
                b'/' | b'\\' | 0 => {
                    return Err(format!(
                        "the path {path:?} holds an encoded {}; such paths are refused because servers decode them differently",
                        match c {
                            b'/' => "slash (%2F)",
                            b'\\' => "backslash (%5C)",
                            _ => "NUL (%00)",
                        }
                    ));
                }
                b'%' if bytes.get(i + 3).copied().and_then(hex).is_some()
                    && bytes.get(i + 4).copied().and_then(hex).is_some() =>
                {
                    return Err(format!(
                        "the path {path:?} is percent-encoded twice (%25XX); such paths are refused"
                    ));
                }
                c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                    out.push(c as char);
                }
                c => out.push_str(&format!("%{c:02X}")),
            }
            i += 3;
        } else {
            out.push(b as char);
            i += 1;
        }
    }
    if out.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("the path {path:?} holds dot-segments"));
    }
    Ok(out)
}

/// A request, normalized: what is matched, resolved and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
    /// Normalized path, starting with `/`.
    pub path: String,
    pub query: Option<String>,
}

impl Target {
    /// Parse and normalize a request URI; `Err` says why it is refused.
    pub fn parse(uri: &http::Uri) -> Result<Target, String> {
        let scheme = uri
            .scheme_str()
            .and_then(Scheme::parse)
            .ok_or_else(|| format!("{uri}: only http and https are allowed"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{uri}: the request has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{uri}: URLs with userinfo (`user@host`) are refused"
            ));
        }
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let text = format!("{}://{}{path}", scheme.as_str(), authority.as_str());
        let url = url::Url::parse(&text).map_err(|e| format!("{uri}: not a valid URL ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{uri}: URLs with userinfo (`user@host`) are refused"
            ));
        }
        let host = host_of(&url).map_err(|e| format!("{uri}: {e}"))?;
        let port = url.port_or_known_default().unwrap_or(scheme.default_port());
        let path = canonical_path(url.path()).map_err(|e| format!("{uri}: {e}"))?;
        Ok(Target {
            scheme,
            host,
            port,
            path,
            query: url.query().map(str::to_string),
        })
    }

    /// `host[:port]`, the port only when not the scheme's default: the
    /// `Host` header sent upstream.
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Path and query as sent on the wire.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path
        )
    }
}

/// What vetting says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Publicly routable: allowed for a name that matched a rule.
    Public,
    /// Special-purpose: allowed only when an IP/CIDR entry grants it
    /// (`exact_only`: only an entry naming exactly this address).
    Special {
        what: &'static str,
        exact_only: bool,
    },
    /// Never reachable, whatever the manifest says.
    Never { what: &'static str },
}

/// Cloud metadata endpoints: reachable only when named exactly.
const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), // AWS, GCP, Azure IMDS, OpenStack, ...
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),   // AWS ECS task metadata
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),  // AWS EKS pod identity
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), // Alibaba Cloud
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),   // Azure wire server
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),     // Oracle Cloud (legacy)
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), // AWS IMDS over IPv6
];

/// Classify an address for egress (IPv4-mapped IPv6 as its IPv4 address).
pub fn classify(ip: IpAddr) -> Class {
    let ip = ip.to_canonical();
    if METADATA.contains(&ip) {
        return Class::Special {
            what: "a cloud metadata address",
            exact_only: true,
        };
    }
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn special(what: &'static str) -> Class {
    Class::Special {
        what,
        exact_only: false,
    }
}

fn classify_v4(a: Ipv4Addr) -> Class {
    let in_net = |net: [u8; 4], prefix: u8| {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(net)),
            prefix,
        }
        .contains(IpAddr::V4(a))
    };
    if in_net([0, 0, 0, 0], 8) {
        Class::Never {
            what: "an unspecified (\"this network\") address",
        }
    } else if a.is_broadcast() {
        Class::Never {
            what: "the broadcast address",
        }
    } else if a.is_multicast() {
        Class::Never {
            what: "a multicast address",
        }
    } else if in_net([240, 0, 0, 0], 4) {
        Class::Never {
            what: "a reserved address",
        }
    } else if a.is_loopback() {
        special("a loopback address")
    } else if a.is_private() {
        special("a private address")
    } else if a.is_link_local() {
        special("a link-local address")
    } else if in_net([100, 64, 0, 0], 10) {
        special("a carrier-grade NAT (shared) address")
    } else if in_net([192, 0, 2, 0], 24)
        || in_net([198, 51, 100, 0], 24)
        || in_net([203, 0, 113, 0], 24)
    {
        special("a documentation address")
    } else if in_net([192, 0, 0, 0], 24)
        || in_net([192, 88, 99, 0], 24)
        || in_net([198, 18, 0, 0], 15)
    {
        special("a special-purpose address")
    } else {
        Class::Public
    }
}

fn classify_v6(a: Ipv6Addr) -> Class {
    let bits = u128::from(a);
    let in_net = |net: u128, prefix: u32| {
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits & mask == net & mask
    };
    let embedded = |v4: u32, what: &'static str| match classify_v4(Ipv4Addr::from(v4)) {
        Class::Public => Class::Public,
        Class::Never { .. } => Class::Never { what },
        Class::Special { .. } => special(what),
    };
    if a.is_unspecified() {
        Class::Never {
            what: "the unspecified address",
        }
    } else if a.is_multicast() {
        Class::Never {
            what: "a multicast address",
        }
    } else if a.is_loopback() {
        special("a loopback address")
    } else if in_net(0, 96) {
        // IPv4-compatible (deprecated): judged by the IPv4 address inside.
        embedded(
            bits as u32,
            "an IPv4-compatible address embedding a non-public IPv4 address",
        )
    } else if in_net(0x0064_ff9b << 96, 96) {
        embedded(
            bits as u32,
            "a NAT64 address embedding a non-public IPv4 address",
        )
    } else if in_net(0x0064_ff9b_0001 << 80, 48) {
        special("a local-use NAT64 address")
    } else if in_net(0x2002 << 112, 16) {
        embedded(
            (bits >> 80) as u32,
            "a 6to4 address embedding a non-public IPv4 address",
        )
    } else if in_net(0x2001_0000 << 96, 32) {
        special("a Teredo tunnel address")
    } else if in_net(0x2001_0db8 << 96, 32) {
        special("a documentation address")
    } else if in_net(0x0100 << 112, 64) {
        special("a discard-only address")
    } else if in_net(0xfc00 << 112, 7) {
        special("a unique-local address")
    } else if in_net(0xfe80 << 112, 10) {
        special("a link-local address")
    } else if in_net(0xfec0 << 112, 10) {
        special("a site-local address")
    } else {
        Class::Public
    }
}

/// The rules of one plugin.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: Vec<HttpRule>,
}

impl Allowlist {
    pub fn new(rules: Vec<HttpRule>) -> Allowlist {
        Allowlist { rules }
    }

    /// No entry: nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `Ok` when some rule allows the request's scheme, host, port and path;
    /// otherwise why not.
    pub fn check(&self, target: &Target) -> Result<(), String> {
        if self
            .rules
            .iter()
            .any(|r| r.matches_host(&target.host) && r.matches_rest(target))
        {
            return Ok(());
        }
        let near = self.rules.iter().find(|r| r.matches_host(&target.host));
        Err(match near {
            Some(rule) => format!(
                "{target} is not in the http allowlist: `{rule}` names this host but a different scheme, port or path"
            ),
            None => format!("{target} is not in the http allowlist"),
        })
    }

    /// Vet one address `target` resolved to (or its IP literal).
    pub fn vet(&self, target: &Target, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        let subject = match &target.host {
            Host::Name(n) => format!("{n} resolved to {ip}, which is"),
            Host::Ip(_) => format!("{ip} is"),
        };
        vet_address(
            ip,
            &subject,
            |exact_only| self.rules.iter().any(|r| r.grants(target, ip, exact_only)),
            || {
                format!(
                    "{}://{}:{}/*",
                    target.scheme.as_str(),
                    Host::Ip(ip),
                    target.port
                )
            },
        )
    }
}

/// Vet one address a connection would go to: public addresses pass,
/// never-reachable ones fail, special-purpose ones pass only when
/// `granted(exact_only)` says an IP/CIDR entry grants them (`exact_only`:
/// only an entry naming exactly this address counts). `subject` starts the
/// refusal (`"10.0.0.5 is"`, `"db.example resolved to 10.0.0.5, which is"`);
/// `exact_entry` writes the entry that would grant a metadata address.
/// The one vetting rule of `http` and `sockets`.
pub fn vet_address(
    ip: IpAddr,
    subject: &str,
    granted: impl Fn(bool) -> bool,
    exact_entry: impl FnOnce() -> String,
) -> Result<(), String> {
    match classify(ip) {
        Class::Public => Ok(()),
        Class::Never { what } => Err(format!(
            "{subject} {what}; such addresses are never reachable"
        )),
        Class::Special { what, exact_only } => {
            if granted(exact_only) {
                return Ok(());
            }
            let hint = if exact_only {
                format!(
                    "grant it explicitly with an entry naming exactly that address (e.g. \"{}\") if intended",
                    exact_entry()
                )
            } else {
                "grant it explicitly with an IP or CIDR entry if intended".to_string()
            };
            Err(format!("{subject} {what}; {hint}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(rules: &[&str]) -> Allowlist {
        Allowlist::new(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn target(uri: &str) -> Result<Target, String> {
        Target::parse(&uri.parse().unwrap())
    }

    /// Matched and, for IP literals, vetted: what the host would let out
    /// without DNS.
    fn allow(list: &[&str], uri: &str) -> bool {
        let list = rules(list);
        let Ok(t) = target(uri) else { return false };
        list.check(&t).is_ok()
            && match t.host {
                Host::Ip(ip) => list.vet(&t, ip).is_ok(),
                Host::Name(_) => true,
            }
    }

    #[test]
    fn matches_scheme_host_port_and_path_prefix() {
        let r = ["https://api.example.com:443/v1/*"];
        assert!(allow(&r, "https://api.example.com/v1/items"));
        assert!(allow(&r, "https://API.example.com.:443/v1/x"));
        assert!(!allow(&r, "http://api.example.com/v1/items"));
        assert!(!allow(&r, "https://api.example.com:8443/v1/items"));
        assert!(!allow(&r, "https://api.example.com/v2/items"));
        assert!(!allow(&r, "https://evil.com/v1/items"));
        assert!(!allow(&r, "https://api.example.com.evil.com/v1/items"));
    }

    #[test]
    fn scheme_and_port_must_both_match() {
        assert!(!allow(&["https://h.example"], "http://h.example:443/"));
        assert!(!allow(&["http://h.example"], "https://h.example:80/"));
        assert!(allow(&["http://h.example"], "http://h.example:80/"));
    }

    #[test]
    fn wildcards_and_exact_paths() {
        assert!(allow(
            &["http://127.0.0.1:*/hooks/*"],
            "http://127.0.0.1:5555/hooks/a"
        ));
        assert!(!allow(
            &["http://127.0.0.1:*/hooks/*"],
            "http://127.0.0.2:5555/hooks/a"
        ));
        assert!(allow(
            &["https://*.example.com/status"],
            "https://a.b.example.com/status"
        ));
        assert!(!allow(
            &["https://*.example.com/status"],
            "https://example.com/status"
        ));
        assert!(!allow(
            &["https://*.example.com/status"],
            "https://a.example.com/status/x"
        ));
        assert!(allow(&["http://[::1]:8080/*"], "http://[::1]:8080/x"));
    }

    #[test]
    fn hosts_normalize_the_same_on_both_sides() {
        assert!(allow(
            &["https://BÜCHER.example/*"],
            "https://xn--bcher-kva.example/a"
        ));
        // `http::Uri` (what wasi:http builds) refuses `%` in an authority,
        // but the normalization decodes it the same way.
        assert_eq!(
            normalize_host(Scheme::Https, "b%C3%BCcher.example"),
            Ok(Host::Name("xn--bcher-kva.example".into()))
        );
        assert_eq!(
            normalize_host(Scheme::Https, "api.ex%61mple.com"),
            Ok(Host::Name("api.example.com".into()))
        );
        assert!(allow(
            &["https://api.example.com."],
            "https://api.example.com/"
        ));
        assert!(allow(
            &["https://api.example.com"],
            "https://ApI.ExAmPlE.CoM./"
        ));
        assert!(!allow(
            &["https://api.example.com"],
            "https://api.example.com../"
        ));
    }

    #[test]
    fn ip_literal_forms_are_addresses() {
        for form in [
            "http://127.1/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
        ] {
            let t = target(form).unwrap();
            assert_eq!(t.host, Host::Ip("127.0.0.1".parse().unwrap()), "{form}");
            // Granted by name only: no rule matches an address.
            assert!(!allow(&["http://localhost/*"], form), "{form}");
            // Granted as an address: the literal's every spelling is that address.
            assert!(allow(&["http://127.0.0.1/*"], form), "{form}");
        }
        assert!(!allow(&["http://127.0.0.1:*/*"], "http://[::1]/"));
    }

    #[test]
    fn userinfo_is_refused() {
        let r = ["http://allowed.test/*"];
        assert!(!allow(&r, "http://allowed.test@127.0.0.1/x"));
        assert!(!allow(&r, "http://@allowed.test/x"));
        assert!(!allow(&r, "http://u:p@allowed.test/x"));
    }

    #[test]
    fn paths_are_normalized_before_matching() {
        let r = ["http://allowed.test/api/*"];
        assert!(!allow(&r, "http://allowed.test/api/../admin"));
        assert!(!allow(&r, "http://allowed.test/api/%2e%2e/admin"));
        assert!(!allow(&r, "http://allowed.test/api/.%2E/admin"));
        assert!(!allow(&r, "http://allowed.test/api/..%2Fadmin"));
        assert!(!allow(&r, "http://allowed.test/api/..%5cadmin"));
        assert!(!allow(&r, "http://allowed.test/api/%252e%252e/admin"));
        assert!(!allow(&r, "http://allowed.test/api%2F../admin"));
        assert!(allow(&r, "http://allowed.test/%61pi/x"));
        assert!(allow(&r, "http://allowed.test/api/./x"));
        assert_eq!(
            target("http://h/%61pi/%7e%c3%bc?q=%2F")
                .unwrap()
                .path_and_query(),
            "/api/~%C3%BC?q=%2F"
        );
    }

    #[test]
    fn special_addresses_need_an_explicit_grant() {
        let t = target("http://internal.example/x").unwrap();
        let by_name = rules(&["http://internal.example/*"]);
        for ip in [
            "10.0.0.5",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.168.1.1",
            "::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "2002:a00:1::1",
            "64:ff9b::a00:1",
        ] {
            let e = by_name.vet(&t, ip.parse().unwrap()).unwrap_err();
            assert!(
                e.contains("resolved to") && e.contains("grant it explicitly"),
                "{ip}: {e}"
            );
        }
        assert!(by_name.vet(&t, "93.184.216.34".parse().unwrap()).is_ok());
        assert!(
            by_name
                .vet(&t, "2606:2800:220:1::1".parse().unwrap())
                .is_ok()
        );
        let e = by_name.vet(&t, "10.0.0.5".parse().unwrap()).unwrap_err();
        assert!(
            e.contains("internal.example resolved to 10.0.0.5, which is a private address"),
            "{e}"
        );

        let granted = rules(&["http://internal.example/*", "http://[10.0.0.0/8]:80/*"]);
        assert!(granted.vet(&t, "10.1.2.3".parse().unwrap()).is_ok());
        assert!(granted.vet(&t, "11.0.0.1".parse().unwrap()).is_ok());
        assert!(granted.vet(&t, "192.168.0.1".parse().unwrap()).is_err());
        // The grant is for port 80 only.
        let t8080 = target("http://internal.example:8080/x").unwrap();
        assert!(granted.vet(&t8080, "10.1.2.3".parse().unwrap()).is_err());
    }

    #[test]
    fn metadata_needs_the_exact_address_and_some_never_pass() {
        let t = target("http://169.254.169.254/latest").unwrap();
        let broad = rules(&["http://[169.254.0.0/16]:*/*", "http://[0.0.0.0/0]:*/*"]);
        assert!(broad.check(&t).is_ok());
        let e = broad
            .vet(&t, "169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(e.contains("cloud metadata"), "{e}");
        assert!(allow(
            &["http://169.254.169.254/*"],
            "http://169.254.169.254/latest"
        ));
        assert!(!allow(&["http://[::]:*/*"], "http://[fd00:ec2::254]/"));
        for never in [
            "http://0.0.0.0/",
            "http://255.255.255.255/",
            "http://224.0.0.1/",
            "http://[::]/",
            "http://[ff02::1]/",
        ] {
            assert!(
                !allow(
                    &[
                        "http://[0.0.0.0/0]:*/*",
                        "http://[::/0]:*/*",
                        "http://0.0.0.0/*",
                        "http://[::]/*"
                    ],
                    never
                ),
                "{never}"
            );
        }
    }

    #[test]
    fn cidr_entries() {
        assert!(allow(
            &["http://[10.0.0.0/8]:*/*"],
            "http://10.20.30.40:9/x"
        ));
        assert!(!allow(&["http://[10.0.0.0/8]:*/*"], "http://11.0.0.1:9/x"));
        assert!(allow(
            &["http://[fd00::/8]:8080/*"],
            "http://[fd12::1]:8080/x"
        ));
        assert!(
            "http://[10.0.0.1/8]/"
                .parse::<HttpRule>()
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!("http://[10.0.0.0/33]/".parse::<HttpRule>().is_err());
    }

    #[test]
    fn bad_entries_are_explained() {
        for bad in [
            "ftp://x.com",
            "x.com/path",
            "http://u@x.com",
            "http://x.com:0",
            "http://x.com/a*b",
            "http://*x.com",
            "http://127.1/",
            "http://x.com/a/%2F/",
            "http://[::1/",
            "http://x.com/?q",
        ] {
            let e = bad.parse::<HttpRule>().unwrap_err();
            assert!(e.contains("invalid http allowlist entry"), "{bad}: {e}");
        }
    }
}
