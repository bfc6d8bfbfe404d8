//! A programmable upstream DNS server on loopback, for tests.
//!
//! It listens on UDP and TCP on the same ephemeral port of 127.0.0.1. Program replies per
//! question with [`FakeUpstream::answer`], [`FakeUpstream::nxdomain`],
//! [`FakeUpstream::nodata`] or [`FakeUpstream::reply`]; a question nobody programmed gets an
//! empty NXDOMAIN (no SOA). Switch the whole server to silence, SERVFAIL, REFUSED or
//! garbage with [`FakeUpstream::set_behaviour`], slow it down with
//! [`FakeUpstream::set_delay`], and count what it received with [`FakeUpstream::queries`].
//!
//! UDP replies larger than the client allows (512 bytes, or its EDNS payload size) are sent
//! truncated (TC set, no records), so clients fall back to TCP as a real server makes them.
//! Records are sipdns' plain [`Rec`]s, so tests compare what they programmed with what comes
//! out. Dropping the server stops it.
//!
//! ```ignore
//! let up = FakeUpstream::start().await;
//! up.answer("pbx.example.org", RType::A, vec![a("pbx.example.org", 300, "192.0.2.10")]);
//! up.set_behaviour(Behaviour::Silent);
//! assert_eq!(up.queries("pbx.example.org", RType::A), 1);
//! ```

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::Record,
};
use sipdns::{
    hickory::name_from_hickory,
    record::{DomainName, RType, Rcode, Rec, RecordData},
};

use super::hickory::rec_to_hickory;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

/// How the server treats every query, whatever was programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Answer as programmed (the default).
    Answer,
    /// Count the query, then drop it: no reply at all.
    Silent,
    /// Reply SERVFAIL.
    ServFail,
    /// Reply REFUSED.
    Refused,
    /// Reply with bytes that are not a DNS message (but carry the query's ID).
    Garbage,
}

/// A complete programmed reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Response code.
    pub(crate) rcode: Rcode,
    /// Answer section, in order.
    pub(crate) answers: Vec<Rec>,
    /// Authority section.
    pub(crate) authority: Vec<Rec>,
    /// Additional section.
    pub(crate) additional: Vec<Rec>,
}

impl Reply {
    /// An empty reply with `rcode`.
    pub(crate) fn empty(rcode: Rcode) -> Self {
        Self {
            rcode,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    replies: HashMap<(DomainName, RType), Reply>,
    counts: HashMap<(DomainName, RType), usize>,
    total: usize,
    tcp: usize,
    behaviour: Option<Behaviour>,
    delay: Duration,
}

/// The fake server. See the module docs.
pub(crate) struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeUpstream {
    /// Binds UDP and TCP on one ephemeral loopback port and starts serving.
    pub(crate) async fn start() -> Self {
        // Find a port free for both protocols (the UDP one is almost always free for TCP).
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let udp = Arc::new(udp);
        let tasks = vec![
            tokio::spawn(serve_udp(udp, state.clone())),
            tokio::spawn(serve_tcp(tcp, state.clone())),
        ];
        Self { addr, state, tasks }
    }

    /// The `ip:port` to use as the upstream.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Programs the full reply for (name, type).
    pub(crate) fn reply(&self, name: &str, rtype: RType, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .replies
            .insert((dn(name), rtype), reply);
    }

    /// NOERROR with these records in the answer section (in this order).
    pub(crate) fn answer(&self, name: &str, rtype: RType, records: Vec<Rec>) {
        self.reply(
            name,
            rtype,
            Reply {
                answers: records,
                ..Reply::empty(Rcode::NoError)
            },
        );
    }

    /// NXDOMAIN with `soa` in the authority section.
    pub(crate) fn nxdomain(&self, name: &str, rtype: RType, soa: Rec) {
        self.reply(
            name,
            rtype,
            Reply {
                authority: vec![soa],
                ..Reply::empty(Rcode::NxDomain)
            },
        );
    }

    /// NODATA: NOERROR, empty answer, `soa` in the authority section.
    pub(crate) fn nodata(&self, name: &str, rtype: RType, soa: Rec) {
        self.reply(
            name,
            rtype,
            Reply {
                authority: vec![soa],
                ..Reply::empty(Rcode::NoError)
            },
        );
    }

    /// How the server treats every query from now on.
    pub(crate) fn set_behaviour(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = Some(behaviour);
    }

    /// Waits this long before each reply (replies are sent concurrently; tokio time, so it
    /// follows a paused clock).
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Queries received for (name, type), over either transport, whatever the behaviour.
    pub(crate) fn queries(&self, name: &str, rtype: RType) -> usize {
        let st = self.state.lock().unwrap();
        st.counts.get(&(dn(name), rtype)).copied().unwrap_or(0)
    }

    /// All queries received.
    pub(crate) fn total_queries(&self) -> usize {
        self.state.lock().unwrap().total
    }

    /// Queries received over TCP.
    pub(crate) fn tcp_queries(&self) -> usize {
        self.state.lock().unwrap().tcp
    }
}

/// What to send back for one query, after the delay; `None` for silence.
fn respond(state: &Mutex<State>, wire: &[u8], tcp: bool) -> (Duration, Option<Vec<u8>>) {
    let Ok(req) = Message::from_vec(wire) else {
        return (Duration::ZERO, None);
    };
    let mut st = state.lock().unwrap();
    st.total += 1;
    if tcp {
        st.tcp += 1;
    }
    let key = req.queries.first().map(|q| {
        (
            name_from_hickory(q.name()),
            RType(u16::from(q.query_type())),
        )
    });
    if let Some(key) = &key {
        *st.counts.entry(key.clone()).or_default() += 1;
    }
    let delay = st.delay;
    let behaviour = st.behaviour.unwrap_or(Behaviour::Answer);
    let reply = match behaviour {
        Behaviour::Silent => return (delay, None),
        Behaviour::Garbage => {
            let mut junk = req.metadata.id.to_be_bytes().to_vec();
            junk.extend_from_slice(b"\xff\xff not dns");
            return (delay, Some(junk));
        }
        Behaviour::ServFail => Reply::empty(Rcode::ServFail),
        Behaviour::Refused => Reply::empty(Rcode::Refused),
        Behaviour::Answer => key
            .and_then(|k| st.replies.get(&k).cloned())
            .unwrap_or_else(|| Reply::empty(Rcode::NxDomain)),
    };
    drop(st);

    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = rcode_to_hickory(reply.rcode);
    resp.add_queries(req.queries.iter().cloned());
    resp.add_answers(wire_records(&reply.answers));
    resp.add_authorities(wire_records(&reply.authority));
    resp.add_additionals(wire_records(&reply.additional));
    let limit = match &req.edns {
        Some(edns) => {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            resp.set_edns(e);
            edns.max_payload().max(512)
        }
        None => 512,
    };
    let mut bytes = resp.to_vec().unwrap();
    if !tcp && bytes.len() > usize::from(limit) {
        bytes = resp.truncate().to_vec().unwrap();
    }
    (delay, Some(bytes))
}

fn wire_records(recs: &[Rec]) -> Vec<Record> {
    recs.iter()
        .map(|r| rec_to_hickory(r, None).unwrap())
        .collect()
}

fn rcode_to_hickory(rcode: Rcode) -> ResponseCode {
    match rcode {
        Rcode::NoError => ResponseCode::NoError,
        Rcode::FormErr => ResponseCode::FormErr,
        Rcode::ServFail => ResponseCode::ServFail,
        Rcode::NxDomain => ResponseCode::NXDomain,
        Rcode::NotImp => ResponseCode::NotImp,
        Rcode::Refused => ResponseCode::Refused,
        Rcode::BadVers => ResponseCode::BADVERS,
        Rcode::Other(n) => <ResponseCode as From<u16>>::from(n),
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((len, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let (delay, reply) = respond(&state, &buf[..len], false);
        let Some(reply) = reply else { continue };
        let sock = sock.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let _ = sock.send_to(&reply, peer).await;
        });
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(conn, state.clone()));
    }
}

async fn serve_tcp_conn(conn: TcpStream, state: Arc<Mutex<State>>) {
    let (mut rd, wr) = conn.into_split();
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    loop {
        let Ok(len) = rd.read_u16().await else { return };
        let mut msg = vec![0u8; usize::from(len)];
        if rd.read_exact(&mut msg).await.is_err() {
            return;
        }
        let (delay, reply) = respond(&state, &msg, true);
        let Some(reply) = reply else { continue };
        let wr = wr.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            let _ = wr.lock().await.write_all(&framed).await;
        });
    }
}

/// A plain name from text (panics on a bad one: tests only).
pub(crate) fn dn(name: &str) -> DomainName {
    DomainName::parse(name).unwrap()
}

/// An A record.
pub(crate) fn a(name: &str, ttl: u32, ip: &str) -> Rec {
    Rec::new(
        dn(name),
        ttl,
        RecordData::A(ip.parse::<Ipv4Addr>().unwrap()),
    )
}

/// An AAAA record.
pub(crate) fn aaaa(name: &str, ttl: u32, ip: &str) -> Rec {
    Rec::new(
        dn(name),
        ttl,
        RecordData::Aaaa(ip.parse::<Ipv6Addr>().unwrap()),
    )
}

/// A CNAME record.
pub(crate) fn cname(name: &str, ttl: u32, target: &str) -> Rec {
    Rec::new(dn(name), ttl, RecordData::Cname(dn(target)))
}

/// An SRV record.
pub(crate) fn srv(
    name: &str,
    ttl: u32,
    priority: u16,
    weight: u16,
    port: u16,
    target: &str,
) -> Rec {
    Rec::new(
        dn(name),
        ttl,
        RecordData::Srv {
            priority,
            weight,
            port,
            target: dn(target),
        },
    )
}

/// A NAPTR record with flag `s` and an empty regexp, as RFC 3263 uses them.
pub(crate) fn naptr(
    name: &str,
    ttl: u32,
    order: u16,
    preference: u16,
    services: &str,
    replacement: &str,
) -> Rec {
    Rec::new(
        dn(name),
        ttl,
        RecordData::Naptr {
            order,
            preference,
            flags: "s".into(),
            services: services.into(),
            regexp: String::new(),
            replacement: dn(replacement),
        },
    )
}

/// An SOA record for `zone` with the given TTL and negative-caching MINIMUM.
pub(crate) fn soa(zone: &str, ttl: u32, minimum: u32) -> Rec {
    Rec::new(
        dn(zone),
        ttl,
        RecordData::Soa {
            mname: dn(&format!("ns1.{zone}")),
            rname: dn(&format!("hostmaster.{zone}")),
            serial: 1,
            refresh: 3600,
            retry: 600,
            expire: 604_800,
            minimum,
        },
    )
}
