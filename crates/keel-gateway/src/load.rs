//! `keel load`: an open-loop load generator. It opens N sessions, sends a generated order flow at a
//! fixed total rate, and reports round-trip latency percentiles and throughput.
//!
//! Latency is measured from each request's *scheduled* send time to its ack or reject, so a
//! stalled server (or a stalled generator) shows up as latency instead of silently lowering the
//! offered rate — the correction for coordinated omission. Requests that fall due together are
//! written in one system call per session, which is how the gateway is meant to be driven at high
//! rates (offer more than the gateway can take to see its saturation throughput).

use crate::client::{Client, ClientError};
use crate::codec::{ClientMessage, NewOrder, RejectCode, ServerMessage};
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
    /// Rejects received (the engine's and the gateway's).
    pub rejected: u64,
    /// Of the rejects, those the gateway gave without the engine seeing the request (rate
    /// limited, engine busy or stopped, not authorized).
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

/// How much earlier than due the sender wakes from a sleep, to cover the timer's lateness.
const SLEEP_MARGIN: Duration = Duration::from_micros(50);

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

/// What the receiving thread of one session counted.
struct Received {
    acked: u64,
    rejected: u64,
    refused: u64,
    latency: Histogram<u64>,
    last: Instant,
    rejects: BTreeMap<String, u64>,
}

/// The scheduled time of the `k`-th request of the whole run (k from 0) at `rate` per second.
fn due(start: Instant, rate: u64, k: u64) -> Instant {
    start + Duration::from_nanos((u128::from(k) * 1_000_000_000 / u128::from(rate)) as u64)
}

/// Runs the load and prints the report to `out`.
///
/// One sending thread drives every session: the `k`-th request of the run is due at
/// `start + k / rate` and goes to session `k mod sessions`; whatever is due when the thread wakes
/// goes out as one write per session; the thread then sleeps through long gaps (timer slack 1 µs)
/// and polls the clock, yielding, through the last 50 µs, so requests leave on time. One receiving thread
/// per session records each response's latency from its request's scheduled time.
pub fn run(options: &LoadOptions, out: &mut dyn Write) -> Result<LoadReport, ClientError> {
    if options.accounts.is_empty() || options.sessions == 0 || options.rate == 0 {
        return Err(ClientError::Io(std::io::Error::other(
            "need at least one account, session and a positive rate",
        )));
    }
    let sessions = options.sessions;
    let mut clients = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let (id, key) = &options.accounts[i % options.accounts.len()];
        let (client, _) = Client::logon(options.address, AccountId(*id), key)?;
        clients.push(client);
    }
    let _ = writeln!(
        out,
        "keel load: {} sessions, {} requests/s offered for {:?} against {}",
        sessions, options.rate, options.duration, options.address
    );
    let start = Instant::now() + Duration::from_millis(50);
    let done_sending = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::with_capacity(sessions);
    let mut lanes = Vec::with_capacity(sessions);
    let mut receivers = Vec::with_capacity(sessions);
    for client in clients {
        let (sender, mut receiver) = client.split();
        senders.push(sender);
        let scheduled: Arc<Vec<AtomicU64>> = Arc::new((0..SLOTS).map(|_| AtomicU64::new(0)).collect());
        let resting = Arc::new(ArrayQueue::<u64>::new(1 << 16));
        let sent_total = Arc::new(AtomicU64::new(0));
        lanes.push((Arc::clone(&scheduled), Arc::clone(&resting), Arc::clone(&sent_total)));
        let done_sending = Arc::clone(&done_sending);
        receivers.push(std::thread::spawn(move || {
            let mut got = Received {
                acked: 0,
                rejected: 0,
                refused: 0,
                latency: Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
                last: Instant::now(),
                rejects: BTreeMap::new(),
            };
            loop {
                let finished = done_sending.load(Ordering::Acquire);
                if finished && got.acked + got.rejected >= sent_total.load(Ordering::Acquire) {
                    break;
                }
                match receiver.recv(Duration::from_secs(2)) {
                    Ok(ServerMessage::Ack { request, order }) => {
                        got.acked += 1;
                        record(&mut got.latency, &scheduled, request, start);
                        if request % 2 != 0 {
                            let _ = resting.push(order.0);
                        }
                        got.last = Instant::now();
                    }
                    Ok(ServerMessage::Reject { request, code }) => {
                        *got.rejects.entry(format!("{code:?}")).or_insert(0) += 1;
                        got.rejected += 1;
                        if !matches!(code, RejectCode::Engine(_)) {
                            got.refused += 1;
                        }
                        record(&mut got.latency, &scheduled, request, start);
                        got.last = Instant::now();
                    }
                    Ok(ServerMessage::Disconnect { .. }) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            got
        }));
    }
    let (rate, duration) = (options.rate, options.duration);
    let (market, mid) = (MarketId(options.market), options.mid_price);
    let sender_lanes = lanes.clone();
    let sender_thread = std::thread::spawn(move || -> Result<(u64, Histogram<u64>), ClientError> {
        let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        crate::sys::set_timer_slack(Duration::from_micros(1));
        let mut rngs: Vec<Rng> = (0..sessions).map(|i| Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1))).collect();
        let mut dirty = vec![false; sessions];
        let mut next: u64 = 0;
        let result = loop {
            let now = Instant::now();
            if now.duration_since(start) >= duration {
                break Ok((next, lag));
            }
            let first = next;
            // Everything whose scheduled time has come goes out, one write per session.
            while due(start, rate, next) <= now {
                let lane = (next % sessions as u64) as usize;
                let request = next / sessions as u64 + 1;
                let at = due(start, rate, next);
                let (scheduled, resting, _) = &sender_lanes[lane];
                scheduled[(request as usize) % SLOTS]
                    .store(at.duration_since(start).as_nanos() as u64 + 1, Ordering::Release);
                senders[lane].queue(&generate(&mut rngs[lane], request, market, mid, resting));
                dirty[lane] = true;
                next += 1;
            }
            let mut failed = None;
            for (lane, sender) in senders.iter_mut().enumerate() {
                if std::mem::take(&mut dirty[lane]) {
                    if let Err(error) = sender.flush() {
                        failed = Some(error);
                    }
                    let sent = next / sessions as u64 + u64::from((next % sessions as u64) > lane as u64);
                    sender_lanes[lane].2.store(sent, Ordering::Release);
                }
            }
            if let Some(error) = failed {
                break Err(error);
            }
            if next > first {
                let written = Instant::now();
                let oldest = written.saturating_duration_since(due(start, rate, first)).as_nanos() as u64;
                let _ = lag.record_n(oldest.max(1), next - first);
            }
            // A timer wake-up on a virtual machine comes 20–30 µs late even at 1 µs slack: sleep
            // only through long gaps, and spend the last stretch polling the clock, yielding the
            // core to any thread that wants it (on two shared cores, the server's).
            let wait = due(start, rate, next).saturating_duration_since(Instant::now());
            if wait > SLEEP_MARGIN * 2 {
                std::thread::sleep(wait - SLEEP_MARGIN);
            } else if !wait.is_zero() {
                std::thread::yield_now();
            }
        };
        done_sending.store(true, Ordering::Release);
        // The receivers end the sessions once every response is in; a logout here could
        // overtake them.
        result
    });
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
    let sent = sender_thread.join().map_err(|_| std::io::Error::other("sender thread panicked"));
    let mut last_response = start;
    for receiver in receivers {
        let got = receiver.join().map_err(|_| std::io::Error::other("receiver thread panicked"))?;
        report.acked += got.acked;
        report.rejected += got.rejected;
        report.refused += got.refused;
        let _ = report.latency.add(&got.latency);
        for (code, n) in got.rejects {
            *report.rejects.entry(code).or_insert(0) += n;
        }
        last_response = last_response.max(got.last);
    }
    let (sent, send_lag) = sent??;
    report.sent = sent;
    report.send_lag = send_lag;
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
