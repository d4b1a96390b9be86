//! The inbound side of every session, read on the engine thread itself.
//!
//! The acceptor hands each new connection over (with its outbound buffer and writer thread
//! already set up); from then on the sequencer thread reads it, between batches, through the
//! dispatcher's [`Sink::poll_input`](keel_engine::sequencer::Sink::poll_input): every session's
//! socket is asked for what it holds with a receive that never blocks, the frames are decoded, the
//! session's logon, role and rate limit are checked, the session's account is stamped on every
//! command (the client never names the account it acts for), and the commands go straight into
//! the next batch. An order therefore reaches the engine without crossing a thread boundary, and
//! everything a busy socket delivered at once is applied and journalled as one batch. When every
//! socket is quiet the thread sleeps in `poll(2)` over the sockets and a wake-up pipe, which other
//! threads (the acceptor, the operator) write to when they queue something.
//!
//! Reading on the engine thread is safe because nothing here can block: receives are
//! non-blocking, replies go to the session's bounded outbound buffer, and a session that ends is
//! handed to a short-lived thread that waits for its writer and drains its socket (starting that
//! thread, tens of microseconds, is the one cost a disconnect puts on the engine thread).
//!
//! Linux only: the non-blocking receive and the wait are declared against its C library (see
//! `sys`).

use crate::codec::{ClientMessage, DisconnectReason, KEY_LEN, RejectCode, ServerMessage};
use crate::config::Limits;
use crate::dispatcher::{Control, Request, RequestKind, Requests};
use crate::outbound::{Outbound, Push};
use crate::server::Stats;
use crate::sys;
use crossbeam::channel::Sender;
use crossbeam::queue::SegQueue;
use keel_engine::sequencer::Waker;
use keel_engine::{Command, PlaceOrder};
use keel_types::AccountId;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a logged-on session may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Trade for one account.
    Trader,
    /// Send index prices (and read market data).
    Feeder,
}

/// What the acceptor, the sessions and the server share (nothing here refers to the sequencer,
/// which owns the sessions).
pub(crate) struct Context {
    /// Logon keys and roles by id.
    pub(crate) keys: HashMap<u32, ([u8; KEY_LEN], Role)>,
    pub(crate) limits: Limits,
    /// Set once the server is stopping: every session ends with `Shutdown`.
    pub(crate) stop: std::sync::atomic::AtomicBool,
    pub(crate) stats: Arc<Stats>,
    /// Every connection that has not finished closing, for the session limit and for shutdown.
    pub(crate) live: Mutex<HashMap<u32, TcpStream>>,
    /// Threads finishing the close of ended sessions, joined at shutdown.
    pub(crate) closers: Mutex<Vec<JoinHandle<()>>>,
}

/// Locks a mutex, ignoring poisoning (the data it guards stays consistent on every path).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection the acceptor hands to the engine thread: its socket, its outbound buffer and its
/// writer thread.
pub(crate) struct Connection {
    pub(crate) id: u32,
    pub(crate) stream: TcpStream,
    pub(crate) out: Arc<Outbound>,
    pub(crate) writer: Option<JoinHandle<(DisconnectReason, String)>>,
}

/// How a session ends.
type End = (DisconnectReason, String);

/// Bytes read from a socket at a time; also the largest frame a session can send.
const READ_BUFFER: usize = 64 * 1024;

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

/// One session's inbound state.
struct Session {
    connection: Connection,
    buf: Vec<u8>,
    filled: usize,
    last_received: Instant,
    /// Who the session logged on as: an account (trader) or a feeder id.
    logged_on: Option<(u32, Role)>,
    requests: Requests,
    limiter: RateLimit,
    next_tag: u32,
}

/// Every session's inbound side; owned by the dispatcher, run on the sequencer thread.
pub(crate) struct Inbound {
    context: Arc<Context>,
    /// To the dispatcher that owns this (read at its next call, on this same thread).
    control: Sender<Control>,
    sessions: Vec<Session>,
    /// Read end of the wake-up pipe, polled with the sockets.
    wake_rx: UnixStream,
    waker: Waker,
    /// Descriptors to poll, rebuilt before each idle wait.
    fds: Vec<i32>,
}

impl Inbound {
    /// No sessions yet; `control` reaches the dispatcher.
    pub(crate) fn new(context: Arc<Context>, control: Sender<Control>) -> std::io::Result<Inbound> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        // A full pipe already holds a wake-up, so a failed write loses nothing.
        let waker: Waker = Arc::new(move || {
            let _ = (&wake_tx).write(&[1]);
        });
        Ok(Inbound { context, control, sessions: Vec::new(), wake_rx, waker, fds: Vec::new() })
    }

    /// What interrupts [`Inbound::wait`] from another thread.
    pub(crate) fn waker(&self) -> Waker {
        Arc::clone(&self.waker)
    }

    /// Takes over a connection the acceptor set up.
    pub(crate) fn adopt(&mut self, connection: Connection) {
        let limits = &self.context.limits;
        self.sessions.push(Session {
            connection,
            buf: vec![0; READ_BUFFER],
            filled: 0,
            last_received: Instant::now(),
            logged_on: None,
            requests: Arc::new(SegQueue::new()),
            limiter: RateLimit::new(limits.orders_per_second, limits.burst),
            next_tag: 0,
        });
    }

    /// Reads every session once without blocking: commands go to `input` (tagged with the
    /// session), replies the gateway gives itself to the session's outbound buffer, logons and
    /// subscriptions to the dispatcher. Ends sessions that closed, sent garbage, went idle or fell
    /// behind. Returns true when it told the dispatcher something (it should run soon).
    pub(crate) fn poll(&mut self, input: &mut Vec<(u64, Command)>) -> bool {
        let stopping = self.context.stop.load(Ordering::Relaxed);
        let idle = Duration::from_millis(u64::from(self.context.limits.idle_timeout_ms));
        let mut told = false;
        let mut i = 0;
        while i < self.sessions.len() {
            let session = &mut self.sessions[i];
            let ended = if stopping {
                Some((DisconnectReason::Shutdown, "the server is shutting down".into()))
            } else {
                session.read(&self.context, &self.control, idle, input, &mut told)
            };
            match ended {
                Some(end) => {
                    let session = self.sessions.swap_remove(i);
                    told |= session.logged_on.is_some();
                    session.finish(end, &self.context, &self.control);
                }
                None => i += 1,
            }
        }
        told
    }

    /// Sleeps until a socket has input, the waker is called, or `timeout` passes.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        self.fds.clear();
        self.fds.push(self.wake_rx.as_raw_fd());
        self.fds.extend(self.sessions.iter().map(|s| s.connection.stream.as_raw_fd()));
        sys::wait_readable(&self.fds, timeout);
        let mut drained = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut drained), Ok(n) if n > 0) {}
    }
}

impl Drop for Inbound {
    /// The engine thread is ending (shutdown, or a journal failure stopped it): every session
    /// still open gets its `Shutdown` frame and is closed, rather than left with no reader.
    fn drop(&mut self) {
        for session in std::mem::take(&mut self.sessions) {
            let end = (DisconnectReason::Shutdown, "the engine has stopped".to_string());
            session.finish(end, &self.context, &self.control);
        }
    }
}

impl Session {
    /// Reads what the socket holds and handles every complete frame. `Some` ends the session.
    fn read(
        &mut self,
        context: &Context,
        control: &Sender<Control>,
        idle: Duration,
        input: &mut Vec<(u64, Command)>,
        told: &mut bool,
    ) -> Option<End> {
        if self.connection.out.is_closing() {
            return Some((DisconnectReason::SlowConsumer, "outbound buffer overflowed".into()));
        }
        match sys::recv_nonblocking(&self.connection.stream, &mut self.buf[self.filled..]) {
            Ok(0) => return Some((DisconnectReason::Logout, "connection closed by the client".into())),
            Ok(n) => {
                self.filled += n;
                self.last_received = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if self.last_received.elapsed() >= idle {
                    return Some((DisconnectReason::IdleTimeout, format!("nothing received for {idle:?}")));
                }
                return None;
            }
            Err(e) => return Some((DisconnectReason::Shutdown, format!("read failed: {e}"))),
        }
        let mut at = 0;
        let mut ended = None;
        while at < self.filled {
            match ClientMessage::decode(&self.buf[at..self.filled]) {
                Ok(Some((message, used))) => {
                    at += used;
                    if let Err(end) = self.handle(message, context, control, input, told) {
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
        // Replies the gateway gave itself (logon, rate limit, refusals) go out now.
        self.connection.out.flush();
        if ended.is_none() {
            self.buf.copy_within(at..self.filled, 0);
            self.filled -= at;
        }
        ended
    }

    /// Handles one message; `Err` ends the session with that reason.
    fn handle(
        &mut self,
        message: ClientMessage,
        context: &Context,
        control: &Sender<Control>,
        input: &mut Vec<(u64, Command)>,
        told: &mut bool,
    ) -> Result<(), End> {
        let Some((id, role)) = self.logged_on else {
            return match message {
                ClientMessage::Logon { account, key } => self.logon(account, key, context, control, told),
                other => Err((DisconnectReason::NotLoggedOn, format!("{} before logon", name(&other)))),
            };
        };
        let account = AccountId(id);
        let session = self.connection.id;
        let (request, kind, command) = match message {
            ClientMessage::Logon { .. } => {
                return Err((DisconnectReason::AlreadyLoggedOn, format!("already logged on as {id}")));
            }
            ClientMessage::Heartbeat => return Ok(()),
            ClientMessage::Logout => return Err((DisconnectReason::Logout, "logged out".into())),
            ClientMessage::Subscribe { market, channels } => {
                let _ = control.send(Control::Subscribe { session, market, channels });
                *told = true;
                return Ok(());
            }
            ClientMessage::Unsubscribe { market, channels } => {
                let _ = control.send(Control::Unsubscribe { session, market, channels });
                *told = true;
                return Ok(());
            }
            ClientMessage::IndexPrice { request, market, price } => {
                if role != Role::Feeder {
                    return self.refuse(request, context);
                }
                (request, RequestKind::Other, Command::IndexPrice { market, price })
            }
            _ if role != Role::Trader => return self.refuse(message.request_id().unwrap_or(0), context),
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
            context.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.reply(ServerMessage::Reject { request, code: RejectCode::RateLimited }, context);
            return Ok(());
        }
        self.next_tag = self.next_tag.wrapping_add(1);
        let tag = (u64::from(session) << 32) | u64::from(self.next_tag);
        // Queued before the command, so the dispatcher knows the request when the outcome comes.
        self.requests.push(Request { number: self.next_tag, request, kind });
        input.push((tag, command));
        context.stats.commands.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Refuses a request the session's role may not send.
    fn refuse(&mut self, request: u64, context: &Context) -> Result<(), End> {
        context.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        self.reply(ServerMessage::Reject { request, code: RejectCode::NotAuthorized }, context);
        Ok(())
    }

    fn logon(
        &mut self,
        id: AccountId,
        key: [u8; KEY_LEN],
        context: &Context,
        control: &Sender<Control>,
        told: &mut bool,
    ) -> Result<(), End> {
        let known = context.keys.get(&id.0);
        // Compare every byte whatever the outcome, so timing does not reveal a key's prefix.
        let matches =
            known.is_some_and(|(k, _)| k.iter().zip(key.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
        let (true, Some((_, role))) = (matches, known) else {
            return Err((DisconnectReason::BadCredentials, format!("logon refused for account {id}")));
        };
        self.logged_on = Some((id.0, *role));
        context.stats.logons.fetch_add(1, Ordering::Relaxed);
        // The acknowledgement is queued before the session is routable, so it is the first frame.
        self.reply(
            ServerMessage::LogonAck {
                account: id,
                session: self.connection.id,
                heartbeat_ms: context.limits.heartbeat_ms,
            },
            context,
        );
        let out = Arc::clone(&self.connection.out);
        let account = (*role == Role::Trader).then_some(id);
        let requests = Arc::clone(&self.requests);
        let _ = control.send(Control::Register { session: self.connection.id, account, out, requests });
        *told = true;
        Ok(())
    }

    fn reply(&self, message: ServerMessage, context: &Context) {
        if self.connection.out.push(&message) == Push::Overflowed {
            context.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends the session: the disconnect frame is queued, the dispatcher forgets the session, and a
    /// short-lived thread waits for the writer to send what is left and drains the socket (so the
    /// close does not reset the connection and destroy the last frames) without holding up the
    /// engine thread.
    fn finish(self, (reason, text): End, context: &Arc<Context>, control: &Sender<Control>) {
        if reason == DisconnectReason::MalformedFrame {
            context.stats.malformed.fetch_add(1, Ordering::Relaxed);
        }
        let Connection { id, stream, out, writer } = self.connection;
        out.close(reason, text);
        if self.logged_on.is_some() {
            let _ = control.send(Control::Unregister { session: id });
        }
        let closing = Arc::clone(context);
        let closer = std::thread::Builder::new().name(format!("keel-close-{id}")).spawn(move || {
            if let Some(writer) = writer {
                let _ = writer.join();
            }
            linger(&stream);
            // Counted before the entry goes: shutdown waits for `live` to empty, and then every
            // closed session must be counted.
            closing.stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
            lock(&closing.live).remove(&id);
        });
        match closer {
            Ok(handle) => {
                let mut closers = lock(&context.closers);
                // Dropping a finished thread's handle releases it; keeping them all would leak one
                // stack mapping per session ever closed.
                closers.retain(|closer| !closer.is_finished());
                closers.push(handle);
            }
            Err(_) => {
                context.stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
                lock(&context.live).remove(&id);
            }
        }
    }
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
