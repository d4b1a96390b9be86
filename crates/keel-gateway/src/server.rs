//! The TCP server: an acceptor thread, one reader and one writer thread per session, and the
//! dispatcher that turns the engine's published outcomes into messages for sessions — running on
//! the sequencer thread itself, as its sink.
//!
//! A session's reader decodes every frame one read brought, checks logon and the session's role,
//! rate-limits, stamps the session's account on every command (the client never names the account
//! it acts for) and submits to the sequencer without waiting for the outcome. Everything the
//! engine reports comes back through the dispatcher, which alone owns the routing tables and the
//! market-data views, so none of them needs a lock, and which writes each session's messages of a
//! batch with one non-blocking send. The order path therefore crosses one thread boundary
//! (reader → sequencer); the writer threads only carry backlogs, heartbeats and disconnects.

use crate::codec::{ClientMessage, DisconnectReason, KEY_LEN, RejectCode, ServerMessage};
use crate::config::{ConfigError, Limits, ServeConfig};
use crate::dispatcher::{Control, Dispatcher, Request, RequestKind, Requests};
use crate::outbound::{Outbound, Push};
use crossbeam::channel::{self, Sender};
use crossbeam::queue::SegQueue;
use keel_engine::journal::Journal;
use keel_engine::sequencer::{
    Backpressure, Sequencer, SequencerConfig, SequencerError, SubmitError, WaitPolicy,
};
use keel_engine::store::{self, StoreError};
use keel_engine::{Command, Engine, Event, PlaceOrder};
use keel_types::AccountId;
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The session id the operator's commands are tagged with.
pub(crate) const OPERATOR_SESSION: u32 = u32::MAX;
/// The session id the dispatcher's own queries are tagged with.
pub(crate) const DISPATCHER_SESSION: u32 = 0;

/// Why the server could not start or an operator command failed.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// Socket or thread failure.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The store could not be recovered.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A setup command was refused by the engine.
    #[error("setup command {command} was refused: {message}")]
    Setup {
        /// The command.
        command: String,
        /// The engine's reason.
        message: String,
    },
    /// The sequencer has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// No outcome arrived in time.
    #[error("timed out waiting for the engine")]
    Timeout,
    /// The sequencer ended with an error.
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
}

/// Counters an operator (or a test) can read while the server runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sessions accepted.
    pub sessions_opened: AtomicU64,
    /// Sessions that logged on.
    pub logons: AtomicU64,
    /// Sessions ended, for any reason.
    pub sessions_closed: AtomicU64,
    /// Sessions disconnected because their outbound buffer overflowed.
    pub slow_consumers: AtomicU64,
    /// Sessions disconnected for a malformed frame.
    pub malformed: AtomicU64,
    /// Commands submitted to the engine by sessions.
    pub commands: AtomicU64,
    /// Requests refused by the rate limiter.
    pub rate_limited: AtomicU64,
    /// Requests refused because the session's role may not send them.
    pub unauthorized: AtomicU64,
}

/// What a logged-on session may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Trade for one account.
    Trader,
    /// Send index prices (and read market data).
    Feeder,
}

/// What every thread of the server shares.
pub(crate) struct Shared {
    pub(crate) sequencer: Arc<Sequencer>,
    pub(crate) control: Sender<Control>,
    keys: HashMap<u32, ([u8; KEY_LEN], Role)>,
    pub(crate) limits: Limits,
    pub(crate) stop: AtomicBool,
    pub(crate) stats: Arc<Stats>,
    next_session: AtomicU32,
    live: Mutex<HashMap<u32, TcpStream>>,
    session_threads: Mutex<Vec<JoinHandle<()>>>,
    operator_tags: AtomicU64,
}

/// A running exchange: engine, gateway and market data.
pub struct Server {
    address: SocketAddr,
    shared: Option<Arc<Shared>>,
    sequencer: Option<Arc<Sequencer>>,
    acceptor: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
    recovery: String,
}

impl Server {
    /// Recovers the store in `config.data_dir` (setting it up from the configuration when it is
    /// empty), starts the engine and listens on `config.host:config.port`.
    pub fn open(config: &ServeConfig) -> Result<Server, GatewayError> {
        config.validate()?;
        let (engine, journal, report) = store::recover(&config.data_dir, config.flush.into())?;
        Server::start(config, engine, journal, report.to_string())
    }

    fn start(
        config: &ServeConfig,
        engine: Engine,
        journal: Journal,
        recovery: String,
    ) -> Result<Server, GatewayError> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))?;
        let address = listener.local_addr()?;
        let fresh = engine.last_seq() == 0;
        let (control, control_rx) = channel::unbounded();
        let stats = Arc::new(Stats::default());
        let dispatcher = Dispatcher::new(control_rx, Arc::clone(&stats), config);
        let sequencer = Arc::new(Sequencer::start_with_sink(
            engine,
            journal,
            SequencerConfig {
                queue_capacity: 1 << 16,
                max_batch: 1024,
                ring_capacity: 1,
                snapshot_every: config.snapshot_every,
                snapshots_kept: 2,
                store_dir: config.data_dir.clone(),
            },
            WaitPolicy { spin: Duration::from_micros(config.engine_spin_us.into()), ..WaitPolicy::default() },
            Box::new(dispatcher),
        ));
        let operator_tags = AtomicU64::new(0);
        if fresh {
            apply_setup(&sequencer, &control, &operator_tags, config.setup_commands())?;
        }
        let keys = config
            .accounts
            .iter()
            .map(|a| (a.id, (crate::codec::key_bytes(&a.key), Role::Trader)))
            .chain(config.feeders.iter().map(|f| (f.id, (crate::codec::key_bytes(&f.key), Role::Feeder))))
            .collect::<HashMap<_, _>>();
        let shared = Arc::new(Shared {
            sequencer: Arc::clone(&sequencer),
            control,
            keys,
            limits: config.limits.clone(),
            stop: AtomicBool::new(false),
            stats: Arc::clone(&stats),
            next_session: AtomicU32::new(1),
            live: Mutex::new(HashMap::new()),
            session_threads: Mutex::new(Vec::new()),
            operator_tags,
        });
        listener.set_nonblocking(true)?;
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("keel-acceptor".into())
            .spawn(move || accept_loop(listener, acceptor_shared))?;
        Ok(Server {
            address,
            shared: Some(shared),
            sequencer: Some(sequencer),
            acceptor: Some(acceptor),
            stats,
            recovery,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What recovery found in the store.
    pub fn recovery_report(&self) -> &str {
        &self.recovery
    }

    /// Live counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Submits a command as the venue operator (index prices, funding, queries) and waits for its
    /// events. Its effects reach sessions and market data like any other command's.
    pub fn operator(&self, command: Command) -> Result<Vec<Event>, GatewayError> {
        let shared = self.shared.as_ref().ok_or(GatewayError::Stopped)?;
        let answer = submit_operator(&shared.sequencer, &shared.control, &shared.operator_tags, command)?;
        answer.recv_timeout(Duration::from_secs(10)).map_err(|_| GatewayError::Timeout)
    }

    /// Stops accepting, disconnects every session with a reason, stops the dispatcher, and lets
    /// the engine commit everything queued and sync the journal. Returns the engine.
    pub fn shutdown(mut self) -> Result<Engine, GatewayError> {
        self.stop_threads();
        let sequencer = self.sequencer.take().ok_or(GatewayError::Stopped)?;
        let sequencer = Arc::try_unwrap(sequencer).map_err(|_| GatewayError::Stopped)?;
        Ok(sequencer.shutdown()?)
    }

    fn stop_threads(&mut self) {
        let Some(shared) = self.shared.take() else { return };
        shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in lock(&shared.live).values() {
            // Wakes the reader, which ends its session with a `Shutdown` disconnect frame.
            let _ = stream.shutdown(Shutdown::Read);
        }
        let threads = std::mem::take(&mut *lock(&shared.session_threads));
        for thread in threads {
            let _ = thread.join();
        }
        drop(shared);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Submits a command as the operator; its events arrive on the returned channel.
fn submit_operator(
    sequencer: &Sequencer,
    control: &Sender<Control>,
    tags: &AtomicU64,
    command: Command,
) -> Result<channel::Receiver<Vec<Event>>, GatewayError> {
    let tag = (u64::from(OPERATOR_SESSION) << 32) | (tags.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF);
    let (reply, answer) = channel::bounded(1);
    let place = match &command {
        Command::Place(order) => Some(*order),
        _ => None,
    };
    // Registered before the submit, so the dispatcher knows the tag when the outcome comes.
    control.send(Control::Operator { tag, place, reply }).map_err(|_| GatewayError::Stopped)?;
    sequencer.submit(tag, command, Backpressure::Wait).map_err(|_| GatewayError::Stopped)?;
    Ok(answer)
}

/// Applies the setup commands of a fresh store and waits until every one is committed.
fn apply_setup(
    sequencer: &Sequencer,
    control: &Sender<Control>,
    tags: &AtomicU64,
    commands: Vec<Command>,
) -> Result<(), GatewayError> {
    let mut waiting = Vec::with_capacity(commands.len());
    for command in commands {
        let described = format!("{command:?}").chars().take(80).collect::<String>();
        waiting.push((described, submit_operator(sequencer, control, tags, command)?));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (command, answer) in waiting {
        let left = deadline.saturating_duration_since(Instant::now());
        let events = answer.recv_timeout(left).map_err(|_| GatewayError::Timeout)?;
        for event in events {
            if let Event::Rejected { message, .. } = event {
                return Err(GatewayError::Setup { command, message });
            }
        }
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                shared.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
                let session = shared.next_session.fetch_add(1, Ordering::Relaxed);
                let mut threads = lock(&shared.session_threads);
                threads.retain(|t| !t.is_finished());
                if threads.len() >= shared.limits.max_sessions {
                    drop(threads);
                    refuse(stream, DisconnectReason::TooManySessions, "the server is at its session limit");
                    continue;
                }
                let session_shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("keel-session-{session}"))
                    .spawn(move || run_session(session_shared, session, stream));
                if let Ok(handle) = spawned {
                    threads.push(handle);
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Writes one disconnect frame and closes, for connections that never become sessions.
fn refuse(mut stream: TcpStream, reason: DisconnectReason, text: &str) {
    use std::io::Write;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&ServerMessage::Disconnect { reason, text: text.into() }.encode());
    let _ = stream.shutdown(Shutdown::Both);
}

/// A token bucket: `rate` tokens per second up to `burst`.
struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32, burst: u32) -> RateLimit {
        RateLimit {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One session's reader state.
struct Session<'a> {
    shared: &'a Shared,
    id: u32,
    out: Arc<Outbound>,
    /// Who the session logged on as: an account (trader) or a feeder id.
    logged_on: Option<(u32, Role)>,
    requests: Requests,
    limiter: RateLimit,
    next_tag: u32,
}

/// How a session ends.
type End = (DisconnectReason, String);

fn run_session(shared: Arc<Shared>, id: u32, stream: TcpStream) {
    let limits = shared.limits.clone();
    let heartbeat = Duration::from_millis(u64::from(limits.heartbeat_ms));
    let idle = Duration::from_millis(u64::from(limits.idle_timeout_ms));
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(heartbeat.min(Duration::from_millis(250))));
    // A client that stops reading eventually fails the writer's blocked write instead of pinning
    // the thread forever.
    let _ = stream.set_write_timeout(Some(idle));
    let (Ok(writer_stream), Ok(registry_stream), Ok(drain_stream)) =
        (stream.try_clone(), stream.try_clone(), stream.try_clone())
    else {
        return;
    };
    lock(&shared.live).insert(id, registry_stream);
    let Ok(direct_stream) = stream.try_clone() else { return };
    let out = Arc::new(Outbound::new(limits.outbound_bytes, direct_stream));
    let writer_out = Arc::clone(&out);
    let writer = std::thread::Builder::new()
        .name(format!("keel-writer-{id}"))
        .spawn(move || writer_out.run_writer(writer_stream, heartbeat));
    let mut session = Session {
        shared: &shared,
        id,
        out: Arc::clone(&out),
        logged_on: None,
        requests: Arc::new(SegQueue::new()),
        limiter: RateLimit::new(limits.orders_per_second, limits.burst),
        next_tag: 0,
    };
    let (reason, text) = session.read_loop(stream, idle);
    if reason == DisconnectReason::MalformedFrame {
        shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
    }
    out.close(reason, text);
    if session.logged_on.is_some() {
        let _ = shared.control.send(Control::Unregister { session: id });
        shared.sequencer.wake();
    }
    if let Ok(writer) = writer {
        let _ = writer.join();
    }
    linger(&drain_stream);
    lock(&shared.live).remove(&id);
    shared.stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
}

/// Reads and discards what the client still sends, until it closes or a second passes, so that
/// closing the socket with unread input does not reset the connection (a reset discards the
/// final frames, the disconnect reason among them, before the client reads them).
fn linger(stream: &TcpStream) {
    let mut stream = stream;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
}

impl Session<'_> {
    fn read_loop(&mut self, mut stream: TcpStream, idle: Duration) -> End {
        let mut buf = vec![0u8; 64 * 1024];
        let mut filled = 0;
        let mut last_received = Instant::now();
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return (DisconnectReason::Shutdown, "the server is shutting down".into());
            }
            if self.out.is_closing() {
                return (DisconnectReason::SlowConsumer, "outbound buffer overflowed".into());
            }
            match stream.read(&mut buf[filled..]) {
                Ok(0) if self.shared.stop.load(Ordering::Relaxed) => {
                    return (DisconnectReason::Shutdown, "the server is shutting down".into());
                }
                Ok(0) => return (DisconnectReason::Logout, "connection closed by the client".into()),
                Ok(n) => {
                    filled += n;
                    last_received = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if last_received.elapsed() >= idle {
                        return (DisconnectReason::IdleTimeout, format!("nothing received for {idle:?}"));
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return (DisconnectReason::Shutdown, format!("read failed: {e}")),
            }
            let mut at = 0;
            let mut ended = None;
            while at < filled {
                match ClientMessage::decode(&buf[at..filled]) {
                    Ok(Some((message, used))) => {
                        at += used;
                        if let Err(end) = self.handle(message) {
                            ended = Some(end);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        ended = Some((DisconnectReason::MalformedFrame, error.to_string()));
                        break;
                    }
                }
            }
            // Rejects the reader produced itself (rate limit, busy) go out now.
            self.out.flush();
            if let Some(end) = ended {
                return end;
            }
            buf.copy_within(at..filled, 0);
            filled -= at;
        }
    }

    /// Handles one message; `Err` ends the session with that reason.
    fn handle(&mut self, message: ClientMessage) -> Result<(), End> {
        let Some((id, role)) = self.logged_on else {
            return match message {
                ClientMessage::Logon { account, key } => self.logon(account, key),
                other => Err((DisconnectReason::NotLoggedOn, format!("{} before logon", name(&other)))),
            };
        };
        let account = AccountId(id);
        let (request, kind, command) = match message {
            ClientMessage::Logon { .. } => {
                return Err((DisconnectReason::AlreadyLoggedOn, format!("already logged on as {id}")));
            }
            ClientMessage::Heartbeat => return Ok(()),
            ClientMessage::Logout => return Err((DisconnectReason::Logout, "logged out".into())),
            ClientMessage::Subscribe { market, channels }
            | ClientMessage::Unsubscribe { market, channels } => {
                let subscribe = matches!(message, ClientMessage::Subscribe { .. });
                let control = if subscribe {
                    Control::Subscribe { session: self.id, market, channels }
                } else {
                    Control::Unsubscribe { session: self.id, market, channels }
                };
                let _ = self.shared.control.send(control);
                self.shared.sequencer.wake();
                return Ok(());
            }
            ClientMessage::IndexPrice { request, market, price } => {
                if role != Role::Feeder {
                    return self.refuse(request);
                }
                (request, RequestKind::Other, Command::IndexPrice { market, price })
            }
            _ if role != Role::Trader => return self.refuse(request_of(&message)),
            ClientMessage::NewOrder(order) => {
                let place = PlaceOrder {
                    account,
                    market: order.market,
                    side: order.side,
                    kind: order.kind,
                    qty: order.qty,
                    tif: order.tif,
                    stp: order.stp,
                    reduce_only: order.reduce_only,
                };
                (order.request, RequestKind::Place(place), Command::Place(place))
            }
            ClientMessage::Cancel { request, market, order } => {
                (request, RequestKind::Order(order), Command::Cancel { account, market, id: order })
            }
            ClientMessage::Amend { request, market, order, price, qty } => (
                request,
                RequestKind::Order(order),
                Command::Amend { account, market, id: order, price, qty },
            ),
            ClientMessage::CancelAll { request, market } => {
                (request, RequestKind::Other, Command::CancelAll { account, market })
            }
            ClientMessage::AccountQuery { request } => {
                (request, RequestKind::Other, Command::AccountView { account })
            }
        };
        if !self.limiter.allow(Instant::now()) {
            self.shared.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.reply(ServerMessage::Reject { request, code: RejectCode::RateLimited });
            return Ok(());
        }
        self.next_tag = self.next_tag.wrapping_add(1);
        let tag = (u64::from(self.id) << 32) | u64::from(self.next_tag);
        // Queued before the submit, so the dispatcher knows the request when the outcome comes.
        self.requests.push(Request { number: self.next_tag, request, kind });
        match self.shared.sequencer.submit(tag, command, Backpressure::Reject) {
            Ok(()) => {
                self.shared.stats.commands.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                // Its queue entry is skipped when the next outcome of this session arrives.
                let code = match error {
                    SubmitError::Full(_) => RejectCode::Busy,
                    SubmitError::Stopped => RejectCode::Stopped,
                };
                self.reply(ServerMessage::Reject { request, code });
            }
        }
        Ok(())
    }

    /// Refuses a request the session's role may not send.
    fn refuse(&mut self, request: u64) -> Result<(), End> {
        self.shared.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        self.reply(ServerMessage::Reject { request, code: RejectCode::NotAuthorized });
        Ok(())
    }

    fn logon(&mut self, id: AccountId, key: [u8; KEY_LEN]) -> Result<(), End> {
        let known = self.shared.keys.get(&id.0);
        // Compare every byte whatever the outcome, so timing does not reveal a key's prefix.
        let matches =
            known.is_some_and(|(k, _)| k.iter().zip(key.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
        let (true, Some((_, role))) = (matches, known) else {
            return Err((DisconnectReason::BadCredentials, format!("logon refused for account {id}")));
        };
        self.logged_on = Some((id.0, *role));
        self.shared.stats.logons.fetch_add(1, Ordering::Relaxed);
        // The acknowledgement is queued before the session is routable, so it is the first frame.
        self.reply(ServerMessage::LogonAck {
            account: id,
            session: self.id,
            heartbeat_ms: self.shared.limits.heartbeat_ms,
        });
        let out = Arc::clone(&self.out);
        let account = (*role == Role::Trader).then_some(id);
        let requests = Arc::clone(&self.requests);
        let _ = self.shared.control.send(Control::Register { session: self.id, account, out, requests });
        self.shared.sequencer.wake();
        Ok(())
    }

    fn reply(&self, message: ServerMessage) {
        if self.out.push(&message) == Push::Overflowed {
            self.shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A message's name, for disconnect reasons.
fn name(message: &ClientMessage) -> &'static str {
    match message {
        ClientMessage::Logon { .. } => "logon",
        ClientMessage::Logout => "logout",
        ClientMessage::Heartbeat => "heartbeat",
        ClientMessage::NewOrder(_) => "new order",
        ClientMessage::Cancel { .. } => "cancel",
        ClientMessage::Amend { .. } => "amend",
        ClientMessage::CancelAll { .. } => "cancel all",
        ClientMessage::AccountQuery { .. } => "account query",
        ClientMessage::IndexPrice { .. } => "index price",
        ClientMessage::Subscribe { .. } => "subscribe",
        ClientMessage::Unsubscribe { .. } => "unsubscribe",
    }
}

/// The request id of a request message (zero for session messages, which have none).
fn request_of(message: &ClientMessage) -> u64 {
    match message {
        ClientMessage::NewOrder(order) => order.request,
        ClientMessage::Cancel { request, .. }
        | ClientMessage::Amend { request, .. }
        | ClientMessage::CancelAll { request, .. }
        | ClientMessage::AccountQuery { request }
        | ClientMessage::IndexPrice { request, .. } => *request,
        ClientMessage::Logon { .. }
        | ClientMessage::Logout
        | ClientMessage::Heartbeat
        | ClientMessage::Subscribe { .. }
        | ClientMessage::Unsubscribe { .. } => 0,
    }
}
