//! Adversarial agent `tcp-probe`: opens the TCP connections, listeners and
//! name lookups its event asks for, through `std::net` (wasi:sockets), and
//! reports what the host allowed. Its own manifest grants one loopback
//! port; tests load it with other `sockets` grants to probe the host's
//! egress engine.
//!
//! Payload: `{"attempts": [...]}`, each attempt one of
//!
//! - `{"connect": "ip:port", "send": "text"}`: connect (2 s timeout), write
//!   `send`, read the reply until the peer closes or 2 s pass;
//! - `{"listen": "ip:port"}`: bind a listener there;
//! - `{"lookup": "name:port"}`: resolve a name through the guest's resolver;
//! - `{"udp": "ip:port", "send": "text"}`: send one datagram.
//!
//! The call answers with one `tcp-report` action whose payload is
//! `{"results": ["ok: <reply or address>" | "refused: <error>", ...]}`, one
//! entry per attempt in order.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use evos_sdk::{Action, Agent, Error, Event};
use serde::Deserialize;

const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest reply kept in the report.
const MAX_REPLY: usize = 4096;

#[derive(Deserialize)]
struct Probe {
    attempts: Vec<Attempt>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Attempt {
    Connect {
        connect: String,
        #[serde(default)]
        send: String,
    },
    Udp {
        udp: String,
        #[serde(default)]
        send: String,
    },
    Listen {
        listen: String,
    },
    Lookup {
        lookup: String,
    },
}

fn connect(to: &str, send: &str) -> Result<String, String> {
    let addr: SocketAddr = to.parse().map_err(|e| format!("bad address {to:?}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(send.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut reply = Vec::new();
    stream
        .take(MAX_REPLY as u64)
        .read_to_end(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

fn udp(to: &str, send: &str) -> Result<String, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let sent = socket
        .send_to(send.as_bytes(), to)
        .map_err(|e| format!("send: {e}"))?;
    Ok(format!("sent {sent} bytes"))
}

fn listen(at: &str) -> Result<String, String> {
    let listener = TcpListener::bind(at).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(format!("listening on {local}"))
}

fn lookup(name: &str) -> Result<String, String> {
    let addrs: Vec<String> = name
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .map(|a| a.to_string())
        .collect();
    Ok(addrs.join(", "))
}

struct TcpProbe;

impl Agent for TcpProbe {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let probe: Probe = evos_sdk::json::parse(&event.payload)?;
        let results: Vec<String> = probe
            .attempts
            .iter()
            .map(|a| {
                let r = match a {
                    Attempt::Connect { connect: to, send } => connect(to, send),
                    Attempt::Udp { udp: to, send } => udp(to, send),
                    Attempt::Listen { listen: at } => listen(at),
                    Attempt::Lookup { lookup: name } => lookup(name),
                };
                match r {
                    Ok(v) => format!("ok: {v}"),
                    Err(e) => format!("refused: {e}"),
                }
            })
            .collect();
        let payload = serde_json::json!({ "results": results });
        Ok(vec![Action::new(
            "tcp-report",
            &event,
            &payload,
            "every attempt reported",
        )?])
    }
}

evos_sdk::export_agent!(TcpProbe);
