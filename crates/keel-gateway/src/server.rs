//! The TCP server: an acceptor thread, the sequencer thread, and one writer thread per session.
//!
//! The sequencer thread does the whole order path. Its sink, the dispatcher, reads every session's
//! socket without blocking (see `inbound`): it decodes the frames, checks logon, role and rate
//! limit, and puts the commands straight into the next batch. After the batch is committed, the
//! same thread turns the outcomes into acks, private notices and market data, and writes each
//! session's messages with one non-blocking send. An order therefore crosses no thread boundary
//! between the socket and the engine. The acceptor sets up new connections and hands them over.
//! Writer threads carry only backlogs (a client that reads slowly), heartbeats and disconnects.

use crate::codec::{DisconnectReason, ServerMessage};
use crate::config::{ConfigError, ServeConfig};
use crate::dispatcher::{Control, Dispatcher};
use crate::inbound::{Connection, Context, Role, lock};
use crate::outbound::Outbound;
use crossbeam::channel::{self, Sender};
use keel_engine::journal::Journal;
use keel_engine::sequencer::{Backpressure, Sequencer, SequencerConfig, SequencerError, WaitPolicy};
use keel_engine::store::{self, StoreError};
use keel_engine::{Command, Engine, Event};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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

/// What the acceptor and the server's own methods share.
struct Shared {
    sequencer: Arc<Sequencer>,
    control: Sender<Control>,
    context: Arc<Context>,
    next_session: AtomicU32,
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
        let keys = config
            .accounts
            .iter()
            .map(|a| (a.id, (crate::codec::key_bytes(&a.key), Role::Trader)))
            .chain(config.feeders.iter().map(|f| (f.id, (crate::codec::key_bytes(&f.key), Role::Feeder))))
            .collect::<HashMap<_, _>>();
        let context = Arc::new(Context {
            keys,
            limits: config.limits.clone(),
            stop: AtomicBool::new(false),
            stats: Arc::clone(&stats),
            live: Default::default(),
            closers: Default::default(),
        });
        let dispatcher = Dispatcher::new(control_rx, control.clone(), Arc::clone(&context), config)?;
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
        let shared = Arc::new(Shared {
            sequencer: Arc::clone(&sequencer),
            control,
            context,
            next_session: AtomicU32::new(1),
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
        let context = &shared.context;
        context.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The sequencer thread sees `stop` at its next look at the sockets and ends every session
        // with a `Shutdown` frame; each closes on its own thread. Wait for all of them (bounded,
        // in case the engine thread has died and nobody reads the sockets any more).
        shared.sequencer.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lock(&context.live).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        for stream in lock(&context.live).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        loop {
            let closers = std::mem::take(&mut *lock(&context.closers));
            if closers.is_empty() {
                break;
            }
            for closer in closers {
                let _ = closer.join();
            }
        }
        drop(shared);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_threads();
    }
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
    let context = &shared.context;
    while !context.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                context.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
                if lock(&context.live).len() >= context.limits.max_sessions {
                    refuse(stream, DisconnectReason::TooManySessions, "the server is at its session limit");
                    continue;
                }
                let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
                if let Some(connection) = connect(context, id, stream) {
                    match shared.control.send(Control::Adopt(connection)) {
                        Ok(()) => shared.sequencer.wake(),
                        Err(channel::SendError(control)) => {
                            // The engine thread has ended: nobody would ever read this session.
                            if let Control::Adopt(connection) = control {
                                connection.out.close(DisconnectReason::Shutdown, "the engine has stopped");
                            }
                            lock(&context.live).remove(&id);
                        }
                    }
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Sets up a new connection for the engine thread: socket options, the outbound buffer and its
/// writer thread, and an entry among the live connections.
fn connect(context: &Context, id: u32, stream: TcpStream) -> Option<Connection> {
    let limits = &context.limits;
    let heartbeat = Duration::from_millis(u64::from(limits.heartbeat_ms));
    let idle = Duration::from_millis(u64::from(limits.idle_timeout_ms));
    let _ = stream.set_nodelay(true);
    // A client that stops reading eventually fails the writer's blocked write instead of pinning
    // the thread forever. The socket stays blocking for the writer; the engine thread's reads
    // never block (they ask for what is there).
    let _ = stream.set_write_timeout(Some(idle));
    let (Ok(writer_stream), Ok(direct_stream), Ok(registry_stream)) =
        (stream.try_clone(), stream.try_clone(), stream.try_clone())
    else {
        return None;
    };
    let out = Arc::new(Outbound::new(limits.outbound_bytes, direct_stream));
    let writer_out = Arc::clone(&out);
    let writer = std::thread::Builder::new()
        .name(format!("keel-writer-{id}"))
        .spawn(move || writer_out.run_writer(writer_stream, heartbeat))
        .ok()?;
    lock(&context.live).insert(id, registry_stream);
    Some(Connection { id, stream, out, writer: Some(writer) })
}

/// Writes one disconnect frame and closes, for connections that never become sessions.
fn refuse(mut stream: TcpStream, reason: DisconnectReason, text: &str) {
    use std::io::Write;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&ServerMessage::Disconnect { reason, text: text.into() }.encode());
    let _ = stream.shutdown(Shutdown::Both);
}
