//! `keel load`: an open-loop load generator. It opens N sessions, sends a generated order flow at a
//! fixed total rate, and reports round-trip latency percentiles and throughput.
//!
//! Latency is measured from each request's *scheduled* send time to its ack or reject, so a
//! stalled server (or a stalled generator) shows up as latency instead of silently lowering the
//! offered rate — the correction for coordinated omission. Requests that fall due together are
//! written in one system call per session, which is how the gateway is meant to be driven at high
//! rates (offer more than the gateway can take to see its saturation throughput).
//!
//! The whole run — every session's sends and receives — happens on one thread that never blocks:
//! the sockets are non-blocking after logon, and between polls the thread spins (just before a
//! request is due) or yields its core (otherwise). The generator shares the machine with the
//! gateway it measures; with a thread per direction and session, every request and every
//! response paid a thread wake-up (20–30 µs late on a virtual machine), which made the
//! generator's own send lag about half the measured round trip.

use crate::client::{Client, ClientError};
use crate::codec::{ClientMessage, NewOrder, RejectCode, ServerMessage};
use hdrhistogram::Histogram;
use keel_types::{AccountId, MarketId, OrderId, OrderKind, Price, Qty, Side, StpMode, TimeInForce};
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Options of `keel load`.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The gateway.
    pub address: SocketAddr,
    /// Sessions to open (they take the accounts in turn).
    pub sessions: usize,
    /// Total requests per second offered, over all sessions.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Accounts and keys to log on with.
    pub accounts: Vec<(u32, String)>,
    /// The market to trade.
    pub market: u32,
    /// Centre of the generated prices, in ticks.
    pub mid_price: i64,
    /// Spin between requests instead of yielding the core: right when the generator has a core
    /// to itself (pinned), wrong when it shares one with the gateway (see the idle loop).
    pub spin: bool,
}

impl LoadOptions {
    /// Defaults matching `keel serve`'s demo configuration.
    pub fn demo(address: SocketAddr) -> LoadOptions {
        LoadOptions {
            address,
            sessions: 2,
            rate: 100_000,
            duration: Duration::from_secs(10),
            accounts: crate::config::ServeConfig::demo()
                .accounts
                .into_iter()
                .map(|a| (a.id, a.key))
                .collect(),
            market: 1,
            mid_price: 650_000,
            spin: false,
        }
    }
}

/// What a load run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Acks received.
    pub acked: u64,
    /// Rejects received (the engine's and the gateway's).
    pub rejected: u64,
    /// Of the rejects, those the gateway gave without the engine seeing the request (rate
    /// limited, not authorized, or the busy and stopped codes other servers may send).
    pub refused: u64,
    /// Wall time from the first scheduled send to the last response.
    pub elapsed: Duration,
    /// Round-trip latency in nanoseconds, from scheduled send to response.
    pub latency: Histogram<u64>,
    /// Rejects by reason.
    pub rejects: BTreeMap<String, u64>,
    /// How late the generator wrote each request after its scheduled time, in nanoseconds: the
    /// generator's own share of the round trip.
    pub send_lag: Histogram<u64>,
}

impl LoadReport {
    /// Responses per second.
    pub fn throughput(&self) -> f64 {
        (self.acked + self.rejected) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Requests the engine processed (acked or rejected by the engine itself) per second: the
    /// gateway's real throughput, without the cheap refusals of an overloaded gateway.
    pub fn engine_throughput(&self) -> f64 {
        (self.acked + self.rejected - self.refused) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Human-readable summary.
    pub fn summary(&self) -> String {
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1_000.0;
        format!(
            "sent {} acked {} rejected {} in {:.2} s: {:.0} responses/s, {:.0} processed by the engine/s\n\
             round trip (from scheduled send): p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            self.sent,
            self.acked,
            self.rejected,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.engine_throughput(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            self.latency.max() as f64 / 1_000.0,
        ) + &format!(
            "\nsend lag (generator: scheduled → written): p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
            self.send_lag.value_at_quantile(0.5) as f64 / 1_000.0,
            self.send_lag.value_at_quantile(0.99) as f64 / 1_000.0,
            self.send_lag.max() as f64 / 1_000.0,
        ) + &self.rejects.iter().map(|(code, n)| format!("\nrejected {code}: {n}")).collect::<String>()
    }
}

/// How long before a request's scheduled time the idle loop stops yielding its core and spins: a
/// little more than one turn of the loop, so the request is written on time even when the loop
/// has just come back from a yield.
const SPIN_AHEAD: Duration = Duration::from_micros(3);

/// How long the end-of-run drain waits with nothing arriving before it gives up on the responses
/// still outstanding (a server that lost them must not hang the generator).
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Acked order ids a session keeps for the flow's cancels; beyond this the flow places instead,
/// which keeps the generator's memory bounded when the server acks faster than the flow cancels.
const RESTING: usize = 1 << 16;

/// Bytes of a session's receive buffer: thousands of acks per read when the server sends a burst.
/// Between reads it holds at most one partial frame (at most `codec::MAX_FRAME_LEN` bytes and the
/// header), so a read always has room.
const RECEIVE_BUFFER: usize = 256 * 1024;

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// When the requests of a run fall due: the `k`-th request of the run (k from 0) at `k / rate`
/// seconds after the start, on session `k mod sessions`, as that session's request number
/// `k / sessions + 1`. Being a formula, it also tells a response's scheduled send time from its
/// request id, with no table to fill while sending.
#[derive(Clone, Copy)]
struct Schedule {
    rate: u64,
    sessions: u64,
}

impl Schedule {
    /// Nanoseconds from the start of the run to the `k`-th request's scheduled send.
    fn due(self, k: u64) -> u64 {
        (u128::from(k) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    /// Requests scheduled strictly before `duration` has passed: the smallest `k` with
    /// `due(k) >= duration`.
    fn requests_within(self, duration: Duration) -> u64 {
        let scaled = duration.as_nanos() * u128::from(self.rate);
        scaled.div_ceil(1_000_000_000).min(u128::from(u64::MAX)) as u64
    }

    /// The index in the run of session `lane`'s request number `request` (counted from 1).
    fn index(self, lane: usize, request: u64) -> u64 {
        (request - 1) * self.sessions + lane as u64
    }
}

/// One session's socket and everything the loop keeps for it between polls.
struct Session {
    stream: TcpStream,
    /// Requests generated for this session; its request ids are `1..=requested`.
    requested: u64,
    /// Acks and rejects received.
    answered: u64,
    rng: Rng,
    /// Order ids acked for new orders, oldest first, for the flow's cancels.
    resting: VecDeque<u64>,
    /// Encoded requests the kernel has not taken yet (a full socket buffer leaves some here).
    unsent: Vec<u8>,
    /// Bytes of the session's stream queued, and written, since logon.
    queued: u64,
    written: u64,
    /// Requests not wholly written yet, oldest first: where each ends in the stream (in the
    /// count of `queued`) and its scheduled send time (nanoseconds from the start).
    pending: VecDeque<(u64, u64)>,
    /// Bytes received; `received[head..tail]` are not decoded yet.
    received: Vec<u8>,
    head: usize,
    tail: usize,
    /// Why the session is over, once the server disconnected or closed it.
    ended: Option<ClientError>,
}

impl Session {
    /// A session over `stream`, with nothing sent or received yet.
    fn new(stream: TcpStream, rng: Rng) -> Session {
        Session {
            stream,
            requested: 0,
            answered: 0,
            rng,
            resting: VecDeque::new(),
            unsent: Vec::with_capacity(64 * 1024),
            queued: 0,
            written: 0,
            pending: VecDeque::new(),
            received: vec![0; RECEIVE_BUFFER],
            head: 0,
            tail: 0,
            ended: None,
        }
    }

    /// Connects and logs on as `account` with the blocking client, then takes over its socket,
    /// non-blocking for the run.
    fn logon(address: SocketAddr, account: AccountId, key: &str, rng: Rng) -> Result<Session, ClientError> {
        let (client, _) = Client::logon(address, account, key)?;
        let (stream, already) = client.into_stream()?;
        stream.set_nonblocking(true)?;
        let mut session = Session::new(stream, rng);
        // Whatever arrived behind the logon ack is the start of the run's responses.
        if session.received.len() < already.len() {
            session.received.resize(already.len(), 0);
        }
        session.received[..already.len()].copy_from_slice(&already);
        session.tail = already.len();
        Ok(session)
    }

    /// Appends `message` to the bytes to write; `due` is its scheduled send time, for the send
    /// lag once it is written.
    fn queue(&mut self, message: &ClientMessage, due: u64) {
        let before = self.unsent.len();
        message.encode_into(&mut self.unsent);
        self.queued += (self.unsent.len() - before) as u64;
        self.pending.push_back((self.queued, due));
    }

    /// Writes as much of the queued bytes as the socket takes now, keeping the rest for the next
    /// call. True when it wrote anything.
    fn write(&mut self) -> Result<bool, ClientError> {
        let mut wrote = false;
        while !self.unsent.is_empty() {
            match self.stream.write(&self.unsent) {
                Ok(0) => return Err(ClientError::Io(ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.unsent.drain(..n);
                    self.written += n as u64;
                    wrote = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(wrote)
    }

    /// Records, for each request now wholly written, how late that was: `now` minus its
    /// scheduled time, both in nanoseconds from the start.
    fn record_written(&mut self, now: u64, lag: &mut Histogram<u64>) {
        while let Some(&(end, due)) = self.pending.front()
            && end <= self.written
        {
            let _ = lag.record(now.saturating_sub(due).max(1));
            self.pending.pop_front();
        }
    }

    /// Reads whatever has arrived. True when bytes came; false when none were waiting. A closed
    /// connection is [`ClientError::Closed`].
    fn read(&mut self) -> Result<bool, ClientError> {
        // Every complete frame was decoded after the last read: what is left is at most part of
        // one frame, cheap to move to the front.
        if self.head > 0 {
            self.received.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        match self.stream.read(&mut self.received[self.tail..]) {
            Ok(0) => Err(ClientError::Closed),
            Ok(n) => {
                self.tail += n;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next complete message received, if any.
    fn next_message(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        let Some((message, used)) = ServerMessage::decode(&self.received[self.head..self.tail])? else {
            return Ok(None);
        };
        self.head += used;
        Ok(Some(message))
    }
}

/// Runs the load and prints the report to `out`.
///
/// The `k`-th request of the run is due at `start + k / rate` and goes to session
/// `k mod sessions`. One thread loops until every response is in: it queues every request that
/// has fallen due, writes each session's queue in one write (whatever the socket does not take
/// stays queued for the next turn), reads what each session has received and records each
/// response's latency from its request's scheduled time. When none of that found work it spins if
/// a request is due within a few microseconds, and yields its core otherwise.
/// Once everything is sent it waits for the outstanding responses until none has arrived for
/// two seconds.
pub fn run(options: &LoadOptions, out: &mut dyn Write) -> Result<LoadReport, ClientError> {
    if options.accounts.is_empty() || options.sessions == 0 || options.rate == 0 {
        return Err(ClientError::Io(std::io::Error::other(
            "need at least one account, session and a positive rate",
        )));
    }
    let mut sessions = (0..options.sessions)
        .map(|i| {
            let (id, key) = &options.accounts[i % options.accounts.len()];
            Session::logon(options.address, AccountId(*id), key, Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let _ = writeln!(
        out,
        "keel load: {} sessions, {} requests/s offered for {:?} against {}",
        options.sessions, options.rate, options.duration, options.address
    );
    let schedule = Schedule { rate: options.rate, sessions: options.sessions as u64 };
    let total = schedule.requests_within(options.duration);
    let (market, mid) = (MarketId(options.market), options.mid_price);
    let mut report = LoadReport {
        sent: 0,
        acked: 0,
        rejected: 0,
        refused: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
        rejects: BTreeMap::new(),
        send_lag: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
    };
    let start = Instant::now() + Duration::from_millis(50);
    let nanos = |at: Instant| at.saturating_duration_since(start).as_nanos() as u64;
    let mut next: u64 = 0;
    let mut last_response = start;
    let mut all_sent: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut busy = false;
        // Everything whose scheduled time has come is queued on its session.
        if now >= start {
            let clock = nanos(now);
            while next < total && schedule.due(next) <= clock {
                let session = &mut sessions[(next % schedule.sessions) as usize];
                session.requested += 1;
                let message =
                    generate(&mut session.rng, session.requested, market, mid, &mut session.resting);
                session.queue(&message, schedule.due(next));
                next += 1;
            }
        }
        for session in &mut sessions {
            if session.unsent.is_empty() {
                continue;
            }
            // Requests for a session the server ended cannot be sent: the run has failed.
            if let Some(ended) = session.ended.take() {
                return Err(ended);
            }
            if session.write()? {
                busy = true;
                session.record_written(nanos(Instant::now()), &mut report.send_lag);
            }
        }
        for (lane, session) in sessions.iter_mut().enumerate() {
            if session.ended.is_some() {
                continue;
            }
            match session.read() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    session.ended = Some(error);
                    continue;
                }
            }
            busy = true;
            // Everything this read brought arrived by now.
            let arrived = Instant::now();
            let clock = nanos(arrived);
            while let Some(message) = session.next_message()? {
                let request = match message {
                    ServerMessage::Ack { request, order } => {
                        report.acked += 1;
                        if request % 2 != 0 && session.resting.len() < RESTING {
                            session.resting.push_back(order.0);
                        }
                        request
                    }
                    ServerMessage::Reject { request, code } => {
                        *report.rejects.entry(format!("{code:?}")).or_insert(0) += 1;
                        report.rejected += 1;
                        if !matches!(code, RejectCode::Engine(_)) {
                            report.refused += 1;
                        }
                        request
                    }
                    ServerMessage::Disconnect { .. } => {
                        session.ended = Some(ClientError::Unexpected(Box::new(message)));
                        break;
                    }
                    _ => continue,
                };
                session.answered += 1;
                last_response = arrived;
                // Only a request this session sent has a scheduled time.
                if (1..=session.requested).contains(&request) {
                    let due = schedule.due(schedule.index(lane, request));
                    let _ = report.latency.record(clock.saturating_sub(due).max(1));
                }
            }
        }
        if next == total && sessions.iter().all(|s| s.unsent.is_empty()) {
            // Everything is sent: done once every live session has all its answers, or when no
            // answer has come for a while with some still missing. (Only answers count: the
            // server's heartbeats would keep a lost answer waited for until its idle timeout.)
            let sent_at = *all_sent.get_or_insert(now);
            let waiting = sessions.iter().any(|s| s.ended.is_none() && s.answered < s.requested);
            if !waiting || now.saturating_duration_since(sent_at.max(last_response)) > DRAIN_IDLE {
                break;
            }
        }
        if !busy {
            // Nothing to do. Just before the next request is due, spin so it leaves on time;
            // further off, offer the core to whatever else wants it. The gateway under test runs
            // on the same cores, and a generator that only spins delays the gateway threads that
            // wake on its core: measured at 100 k/s on two cores, p99 3–4 ms against 0.15–0.2 ms
            // with the yield. Yielding never sleeps: with nothing else to run it returns at once,
            // so no wake-up is paid.
            // Pinned to a core of its own (`spin`), it spins throughout: measured at 100 k/s with
            // the gateway pinned to the other core, p99 49–68 µs against 71–124 µs yielding.
            let due_soon =
                next < total && start + Duration::from_nanos(schedule.due(next)) <= now + SPIN_AHEAD;
            if options.spin || due_soon {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
    report.sent = next;
    report.elapsed = last_response.saturating_duration_since(start);
    let _ = writeln!(out, "{}", report.summary());
    Ok(report)
}

/// The `request`-th message of a session's flow: a new order around the mid, then a cancel of an
/// earlier one, in turn — so the book stays bounded while trades happen all the time.
fn generate(
    rng: &mut Rng,
    request: u64,
    market: MarketId,
    mid: i64,
    resting: &mut VecDeque<u64>,
) -> ClientMessage {
    if request % 2 == 0
        && let Some(order) = resting.pop_front()
    {
        return ClientMessage::Cancel { request, market, order: OrderId(order) };
    }
    let r = rng.next();
    let side = if r & 1 == 0 { Side::Buy } else { Side::Sell };
    let offset = ((r >> 8) % 21) as i64 - 10;
    // Buys lean below the mid and sells above it, so about half the orders cross.
    let price = match side {
        Side::Buy => mid - 5 + offset,
        Side::Sell => mid + 5 + offset,
    };
    ClientMessage::NewOrder(NewOrder {
        request,
        market,
        side,
        kind: OrderKind::Limit { price: Price(price) },
        qty: Qty(1 + ((r >> 32) % 5) as i64),
        tif: TimeInForce::Gtc,
        stp: StpMode::CancelNewest,
        reduce_only: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Flush, ServeConfig};
    use crate::server::Server;
    use std::net::TcpListener;

    /// A connected pair over loopback: a non-blocking session on one end, a plain blocking
    /// socket on the other.
    fn pair() -> (Session, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        client.set_nonblocking(true).expect("non-blocking");
        (Session::new(client, Rng(1)), server)
    }

    #[test]
    fn the_schedule_counts_requests_due_before_the_end_and_maps_ids_back() {
        let schedule = Schedule { rate: 100_000, sessions: 2 };
        assert_eq!(schedule.requests_within(Duration::from_secs(10)), 1_000_000);
        assert_eq!(schedule.requests_within(Duration::from_nanos(10_001)), 2);
        assert_eq!(Schedule { rate: 3, sessions: 1 }.requests_within(Duration::from_secs(1)), 3);
        // Session 1's third request is the run's sixth (k = 5), due 50 µs in.
        assert_eq!(schedule.index(1, 3), 5);
        assert_eq!(schedule.due(5), 50_000);
    }

    #[test]
    fn a_full_socket_keeps_the_unsent_bytes_and_sends_them_later_in_order() {
        let (mut session, mut peer) = pair();
        let mut expected = Vec::new();
        let mut lag = Histogram::<u64>::new(3).expect("histogram");
        // Far more than loopback's socket buffers hold while the peer reads nothing.
        let requests = 1_000_000u64;
        for request in 1..=requests {
            let message = ClientMessage::Cancel { request, market: MarketId(1), order: OrderId(request) };
            message.encode_into(&mut expected);
            session.queue(&message, request);
        }
        assert!(session.write().expect("write"));
        session.record_written(requests + 10, &mut lag);
        assert!(!session.unsent.is_empty(), "the peer reads nothing, so the socket must fill");
        assert_eq!(session.written + session.unsent.len() as u64, expected.len() as u64);
        // Only the requests wholly written have a send lag.
        assert_eq!(lag.len(), requests - session.pending.len() as u64);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).expect("read");
            got
        });
        while !session.unsent.is_empty() {
            session.write().expect("write");
        }
        session.record_written(requests + 10, &mut lag);
        assert_eq!(lag.len(), requests);
        assert!(session.pending.is_empty());
        drop(session);
        assert!(reader.join().expect("reader") == expected, "the bytes must arrive whole and in order");
    }

    #[test]
    fn a_frame_split_across_reads_is_decoded_once_whole() {
        let (mut session, mut peer) = pair();
        let mut bytes = Vec::new();
        ServerMessage::Ack { request: 7, order: OrderId(42) }.encode_into(&mut bytes);
        ServerMessage::Reject { request: 8, code: RejectCode::RateLimited }.encode_into(&mut bytes);
        let split = bytes.len() / 3;
        assert!(!session.read().expect("read"), "nothing has been sent yet");
        peer.write_all(&bytes[..split]).expect("write");
        while !session.read().expect("read") {}
        assert!(session.next_message().expect("decode").is_none(), "half a frame is not a message");
        peer.write_all(&bytes[split..]).expect("write");
        let mut messages = Vec::new();
        while messages.len() < 2 {
            session.read().expect("read");
            while let Some(message) = session.next_message().expect("decode") {
                messages.push(message);
            }
        }
        assert_eq!(
            messages,
            [
                ServerMessage::Ack { request: 7, order: OrderId(42) },
                ServerMessage::Reject { request: 8, code: RejectCode::RateLimited }
            ]
        );
        drop(peer);
        let closed = loop {
            match session.read() {
                Ok(_) => {}
                Err(error) => break error,
            }
        };
        assert!(matches!(closed, ClientError::Closed));
    }

    #[test]
    fn a_run_against_a_gateway_answers_and_times_every_request() {
        let dir = std::env::temp_dir().join(format!("keel-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = ServeConfig::demo();
        config.port = 0;
        config.data_dir = dir.clone();
        config.flush = Flush::Buffered;
        config.snapshot_every = None;
        config.tick_ms = 0;
        let server = Server::open(&config).expect("server");
        let mut options = LoadOptions::demo(server.address());
        options.rate = 4_000;
        options.duration = Duration::from_millis(250);
        let mut out = Vec::new();
        let report = run(&options, &mut out).expect("load run");
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(report.sent, 1_000);
        assert_eq!(report.acked + report.rejected, report.sent, "every request is answered");
        assert_eq!(report.refused, 0, "{:?}", report.rejects);
        assert_eq!(report.latency.len(), report.sent);
        assert_eq!(report.send_lag.len(), report.sent);
        assert!(report.elapsed >= Duration::from_millis(249));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("sent 1000 acked"), "{text}");
    }
}
