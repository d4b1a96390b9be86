//! `keel load`: an open-loop load generator. It opens N sessions, sends a generated order flow at a
//! fixed total rate, and reports round-trip latency percentiles and throughput.
//!
//! Latency is measured from each request's *scheduled* send time to its ack or reject, so a
//! stalled server (or a stalled generator) shows up as latency instead of silently lowering the
//! offered rate — the correction for coordinated omission. Requests that fall due together are
//! written in one system call, which is how the gateway is meant to be driven at high rates.

use crate::client::{Client, ClientError};
use crate::codec::{ClientMessage, NewOrder, ServerMessage};
use crossbeam::queue::ArrayQueue;
use hdrhistogram::Histogram;
use keel_types::{AccountId, MarketId, OrderId, OrderKind, Price, Qty, Side, StpMode, TimeInForce};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Rejects received.
    pub rejected: u64,
    /// Wall time from the first scheduled send to the last response.
    pub elapsed: Duration,
    /// Round-trip latency in nanoseconds, from scheduled send to response.
    pub latency: Histogram<u64>,
    /// Rejects by reason.
    pub rejects: BTreeMap<String, u64>,
}

impl LoadReport {
    /// Responses per second.
    pub fn throughput(&self) -> f64 {
        (self.acked + self.rejected) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Human-readable summary.
    pub fn summary(&self) -> String {
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1_000.0;
        format!(
            "sent {} acked {} rejected {} in {:.2} s: {:.0} responses/s\n\
             round trip (from scheduled send): p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            self.sent,
            self.acked,
            self.rejected,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            self.latency.max() as f64 / 1_000.0,
        ) + &self.rejects.iter().map(|(code, n)| format!("\nrejected {code}: {n}")).collect::<String>()
    }
}

/// Slots of the scheduled-send-time table (a request's slot is its id modulo this).
const SLOTS: usize = 1 << 20;

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

/// Runs the load and prints the report to `out`.
pub fn run(options: &LoadOptions, out: &mut dyn Write) -> Result<LoadReport, ClientError> {
    if options.accounts.is_empty() || options.sessions == 0 || options.rate == 0 {
        return Err(ClientError::Io(std::io::Error::other(
            "need at least one account, session and a positive rate",
        )));
    }
    let per_session = options.rate as f64 / options.sessions as f64;
    let interval = Duration::from_secs_f64(1.0 / per_session);
    let mut clients = Vec::with_capacity(options.sessions);
    for i in 0..options.sessions {
        let (id, key) = &options.accounts[i % options.accounts.len()];
        let (client, _) = Client::logon(options.address, AccountId(*id), key)?;
        clients.push(client);
    }
    let _ = writeln!(
        out,
        "keel load: {} sessions, {} requests/s offered for {:?} against {}",
        options.sessions, options.rate, options.duration, options.address
    );
    let start = Instant::now() + Duration::from_millis(50);
    let mut threads = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (mut sender, mut receiver) = client.split();
        let scheduled: Arc<Vec<AtomicU64>> = Arc::new((0..SLOTS).map(|_| AtomicU64::new(0)).collect());
        let resting = Arc::new(ArrayQueue::<u64>::new(1 << 16));
        let done_sending = Arc::new(AtomicBool::new(false));
        let sent_total = Arc::new(AtomicU64::new(0));
        let (send_scheduled, send_resting, send_done, send_total) = (
            Arc::clone(&scheduled),
            Arc::clone(&resting),
            Arc::clone(&done_sending),
            Arc::clone(&sent_total),
        );
        let duration = options.duration;
        let (market, mid) = (MarketId(options.market), options.mid_price);
        let sender_thread = std::thread::spawn(move || -> Result<u64, ClientError> {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            let mut next: u64 = 0;
            loop {
                let now = Instant::now();
                if now.duration_since(start) >= duration {
                    break;
                }
                // Everything whose scheduled time has come goes out in one write.
                while start + interval.mul_f64(next as f64) <= now {
                    let request = next + 1;
                    let at = start + interval.mul_f64(next as f64);
                    send_scheduled[(request as usize) % SLOTS]
                        .store(at.duration_since(start).as_nanos() as u64 + 1, Ordering::Release);
                    sender.queue(&generate(&mut rng, request, market, mid, &send_resting));
                    next += 1;
                }
                sender.flush()?;
                send_total.store(next, Ordering::Release);
                // Sleep rather than spin: the generator shares the machine with the server, and
                // whatever falls due meanwhile goes out as one batch, timed from its schedule.
                let due = start + interval.mul_f64(next as f64);
                let wait = due.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.max(Duration::from_micros(20)));
            }
            send_done.store(true, Ordering::Release);
            // The receiver ends the session once every response is in; a logout here could
            // overtake them.
            Ok(next)
        });
        let receiver_thread = std::thread::spawn(move || {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
            let (mut acked, mut rejected) = (0u64, 0u64);
            let mut rejects = BTreeMap::new();
            let mut last = Instant::now();
            loop {
                let finished = done_sending.load(Ordering::Acquire);
                if finished && acked + rejected >= sent_total.load(Ordering::Acquire) {
                    break;
                }
                match receiver.recv(Duration::from_secs(2)) {
                    Ok(ServerMessage::Ack { request, order }) => {
                        acked += 1;
                        record(&mut latency, &scheduled, request, start);
                        if request % 2 != 0 {
                            let _ = resting.push(order.0);
                        }
                        last = Instant::now();
                    }
                    Ok(ServerMessage::Reject { request, code }) => {
                        *rejects.entry(format!("{code:?}")).or_insert(0) += 1;
                        rejected += 1;
                        record(&mut latency, &scheduled, request, start);
                        last = Instant::now();
                    }
                    Ok(ServerMessage::Disconnect { .. }) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            (acked, rejected, latency, last, rejects)
        });
        threads.push((sender_thread, receiver_thread));
    }
    let mut report = LoadReport {
        sent: 0,
        acked: 0,
        rejected: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
        rejects: BTreeMap::new(),
    };
    let mut last_response = start;
    for (sender, receiver) in threads {
        let sent = sender.join().map_err(|_| std::io::Error::other("sender thread panicked"))?;
        report.sent += sent?;
        let (acked, rejected, latency, last, rejects) =
            receiver.join().map_err(|_| std::io::Error::other("receiver thread panicked"))?;
        report.acked += acked;
        report.rejected += rejected;
        let _ = report.latency.add(&latency);
        for (code, n) in rejects {
            *report.rejects.entry(code).or_insert(0) += n;
        }
        last_response = last_response.max(last);
    }
    report.elapsed = last_response.saturating_duration_since(start);
    let _ = writeln!(out, "{}", report.summary());
    Ok(report)
}

fn record(histogram: &mut Histogram<u64>, scheduled: &[AtomicU64], request: u64, start: Instant) {
    let at = scheduled[(request as usize) % SLOTS].load(Ordering::Acquire);
    if at == 0 {
        return;
    }
    let now = Instant::now().duration_since(start).as_nanos() as u64;
    let _ = histogram.record(now.saturating_sub(at - 1).max(1));
}

/// The `request`-th message of a session's flow: a new order around the mid, then a cancel of an
/// earlier one, in turn — so the book stays bounded while trades happen all the time.
fn generate(
    rng: &mut Rng,
    request: u64,
    market: MarketId,
    mid: i64,
    resting: &ArrayQueue<u64>,
) -> ClientMessage {
    if request % 2 == 0
        && let Some(order) = resting.pop()
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
