//! The sequencer: the one thread that owns the engine.
//!
//! It drains a bounded lock-free queue of commands in batches; stamps each with the next sequence
//! number and the time; appends it to the journal; applies it; commits the batch under the
//! journal's flush policy; and only then publishes the batch's events — so an event a client sees
//! is an acknowledgement that its command is durable to the promised degree.
//!
//! Back-pressure is explicit: [`Sequencer::submit`] with [`Backpressure::Reject`] hands a command
//! back when the queue is full; with [`Backpressure::Wait`] it blocks until there is room. Nothing
//! is dropped silently.
//!
//! Outcomes go out one of two ways. By default through a bounded ring that never blocks the
//! engine: if consumers fall more than the ring's capacity behind, the oldest batches are
//! overwritten and a consumer sees the gap in the sequence numbers (and can fill it from the
//! journal). Or, started with [`Sequencer::start_with_sink`], to a [`Sink`] that runs on the
//! sequencer thread itself right after each commit — no hand-off to another thread, which is what
//! a latency-sensitive consumer such as the gateway wants.
//!
//! Input and waking: besides its queue, the thread reads a sink's own input
//! ([`Sink::poll_input`]; the gateway's sockets), so commands from the network reach the engine
//! without a hand-off. After the last command it keeps polling for a short while (a spin, so a
//! steady flow never pays for a wake-up) and then sleeps — in the sink's own wait
//! ([`Sink::wait_for_input`], the gateway's `poll(2)` over its sockets) or else parked. A
//! submitter wakes it (unpark, and the sink's waker) only when it sleeps. An idle sequencer
//! therefore costs nothing.
//!
//! Snapshots (`snapshot_every`) are an optimisation for recovery time, not part of durability:
//! an acknowledgement is durable because the journal holds the command, and the journal alone
//! recovers the state. So a snapshot is written in the background. Between two batches the engine
//! thread encodes the engine (the only consistent view of it is between commands, and the engine
//! is not shared); a writer thread owned by the sequencer writes, fsyncs, renames and prunes,
//! while the engine thread goes on with the next batch. Consequently nothing is promised about
//! *when* a snapshot reaches the disk relative to later acknowledgements; a crash may leave the
//! newest snapshot behind the last acknowledged command (or leave none), and recovery then
//! replays a longer journal tail. The rules:
//!
//! - At most one snapshot is in flight. One that falls due while the writer is still busy is
//!   deferred, not skipped and not queued: the engine thread checks again after each batch and
//!   encodes the state of that moment as soon as the writer is free. Deferring keeps the journal
//!   tail to replay as short as the disk allows (skipping would let it grow by another interval),
//!   and it never holds two encoded copies of the state in memory nor makes the engine wait.
//! - A write failure is not lost: the engine thread collects the writer's report after every
//!   batch, and a failure stops the sequencer there with [`SequencerError::Snapshot`] (the batch
//!   just published was committed to the journal, so its acknowledgements stand). A failure the
//!   writer reports after the last batch surfaces from [`Sequencer::shutdown`].
//! - At shutdown the sequencer waits for the snapshot in flight, then writes a deferred one if
//!   one is due, and waits for that too, before returning the engine.

use crate::codec;
use crate::command::{Command, Sequenced};
use crate::engine::Engine;
use crate::event::Event;
use crate::journal::{Journal, JournalError};
use crate::store;
use crossbeam::queue::ArrayQueue;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// What `submit` does when the command queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Block until there is room.
    Wait,
    /// Return the command to the caller at once.
    Reject,
}

/// A command that was not queued.
#[derive(Debug, Error)]
pub enum SubmitError {
    /// The queue is full (only with [`Backpressure::Reject`]); the command is handed back.
    #[error("the command queue is full")]
    Full(Command),
    /// The sequencer has stopped.
    #[error("the sequencer has stopped")]
    Stopped,
}

/// The sequencer thread ended with an error.
#[derive(Debug, Error)]
pub enum SequencerError {
    /// The journal could not be written; the engine stopped rather than acknowledge commands it
    /// could not make durable.
    #[error("journal failure, sequencer stopped: {0}")]
    Journal(#[from] JournalError),
    /// A snapshot could not be written (reported by the snapshot writer thread, and surfaced at
    /// the first batch after the failure or at shutdown).
    #[error("snapshot failure, sequencer stopped: {0}")]
    Snapshot(#[from] store::StoreError),
    /// The snapshot writer thread could not be started or died without reporting (a panic).
    #[error("snapshot writer thread failed, sequencer stopped: {0}")]
    SnapshotWriter(String),
    /// The thread panicked.
    #[error("the sequencer thread panicked")]
    Panicked,
}

/// Sizes and intervals of a sequencer.
#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// Commands the inbound queue holds.
    pub queue_capacity: usize,
    /// Most commands applied and committed as one batch.
    pub max_batch: usize,
    /// Published batches the outbound ring holds before overwriting the oldest.
    pub ring_capacity: usize,
    /// Take a snapshot once this many state-changing commands have been applied since the last
    /// one (none when `None`; 0 counts as 1). Taken between batches and written in the
    /// background, so the interval is a minimum, not an exact count.
    pub snapshot_every: Option<u64>,
    /// Snapshots kept on disk.
    pub snapshots_kept: usize,
    /// The store directory (for snapshots).
    pub store_dir: PathBuf,
}

/// How the sequencer thread waits for work (see [`Sequencer::start_with_sink`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    /// How long the thread keeps polling its queue (and its sink's input) after the last command
    /// before it sleeps. Zero sleeps at once; longer spins save the wake-up on a steady flow but burn a core when
    /// the machine has none to spare.
    pub spin: Duration,
    /// Longest sleep: the thread wakes at least this often (a [`Sink`] gets its
    /// [`Sink::publish`] call then, with no outcomes, for its timers).
    pub idle: Duration,
}

impl Default for WaitPolicy {
    fn default() -> WaitPolicy {
        WaitPolicy { spin: Duration::from_micros(10), idle: Duration::from_millis(50) }
    }
}

/// A consumer of outcomes that runs on the sequencer thread.
///
/// It must not block: everything it does delays the next batch. It may ask for more commands
/// (typically queries of its own) by appending them to `follow_up`; they are applied at the head
/// of the next batch, ahead of queued submissions, and their outcomes come back to the sink like
/// any other.
pub trait Sink: Send + 'static {
    /// Receives one committed batch's outcomes in sequence order. Outcomes the sink leaves in the
    /// vector are recycled (their event vectors are reused for later commands, so a steady flow
    /// allocates none); a sink that keeps an outcome drains it. Also called
    /// with no outcomes when the thread was woken by [`Sequencer::wake`] or its idle timeout, so
    /// the sink can run its timers and react to messages of its own.
    fn publish(&mut self, outcomes: &mut Vec<Published>, follow_up: &mut Vec<(u64, Command)>);

    /// Reads the sink's own input — a gateway's sockets — into `input` without blocking, as
    /// tagged commands that are applied like follow-ups. Returns whether the sink has work: it
    /// added commands, or wants a [`Sink::publish`] call for messages of its own. Called whenever
    /// the thread looks for work, so input the sink reads itself reaches the engine without a
    /// hand-off to another thread. The default has no input.
    fn poll_input(&mut self, input: &mut Vec<(u64, Command)>) -> bool {
        let _ = input;
        false
    }

    /// Blocks the idle thread until the sink's input may be ready, its [`Sink::waker`] is
    /// called, or `timeout` passes. Returns false when the sink cannot wait (the default); the
    /// thread then parks instead.
    fn wait_for_input(&mut self, timeout: Duration) -> bool {
        let _ = timeout;
        false
    }

    /// What ends a [`Sink::wait_for_input`] from another thread; called on every submission or
    /// [`Sequencer::wake`] that finds the thread waiting, and when the sequencer closes. `None`
    /// (the default) for a sink that does not wait.
    fn waker(&self) -> Option<Waker> {
        None
    }
}

/// Interrupts a sink's wait for input (see [`Sink::waker`]).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Largest event vector the sequencer keeps for reuse; an order's events fit many times over.
const SPARE_EVENTS_CAPACITY: usize = 256;

/// One client command on its way in, with a tag the client uses to match the outcome.
#[derive(Debug)]
struct Submission {
    tag: u64,
    command: Command,
}

/// The outcome of one command, published after its batch was committed.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// The command's sequence number.
    pub seq: u64,
    /// The tag given to `submit`.
    pub tag: u64,
    /// What the command did.
    pub events: Vec<Event>,
}

/// What submitters and the sequencer thread share.
struct Inbound {
    queue: ArrayQueue<Submission>,
    /// Set by the thread just before it parks, cleared when it runs.
    parked: AtomicBool,
    /// Set by [`Sequencer::wake`]: the sink wants a call even without commands.
    woken: AtomicBool,
    /// No more submissions: drain the queue and stop.
    closed: AtomicBool,
    /// The thread has ended (normally or with an error).
    ended: AtomicBool,
    /// The sequencer thread, once it runs.
    thread: std::sync::OnceLock<Thread>,
    /// The sink's waker, when the thread waits on the sink's input instead of parking.
    waker: Option<Waker>,
}

impl Inbound {
    fn unpark_if_parked(&self) {
        // Pairs with the fence in `wait`: either the thread sees the new item before parking, or
        // this load sees `parked` and unparks it (an unpark before the park is not lost).
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
            if let Some(waker) = &self.waker {
                waker();
            }
        }
    }
}

/// Marks the thread as ended however it leaves `run`, so waiting submitters give up.
struct EndGuard(Arc<Inbound>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::SeqCst);
    }
}

/// A running sequencer.
pub struct Sequencer {
    inbound: Arc<Inbound>,
    outbound: Arc<ArrayQueue<Published>>,
    thread: Option<JoinHandle<Result<Engine, SequencerError>>>,
}

impl Sequencer {
    /// Starts the sequencer thread, which takes ownership of `engine` and `journal`; outcomes go
    /// to the ring ([`Sequencer::poll`], [`Sequencer::events`]).
    pub fn start(engine: Engine, journal: Journal, config: SequencerConfig) -> Sequencer {
        let write = store_writer(&config);
        Sequencer::spawn(engine, journal, config, WaitPolicy::default(), None, write)
    }

    /// Starts the sequencer thread with `sink` receiving every outcome on the sequencer thread
    /// itself (the ring stays empty), waiting for work as `wait` says.
    pub fn start_with_sink(
        engine: Engine,
        journal: Journal,
        config: SequencerConfig,
        wait: WaitPolicy,
        sink: Box<dyn Sink>,
    ) -> Sequencer {
        let write = store_writer(&config);
        Sequencer::spawn(engine, journal, config, wait, Some(sink), write)
    }

    /// Starts the thread; `write` is what the snapshot writer thread does with each encoded
    /// snapshot (the store's write, or a test's wrapper around it).
    fn spawn(
        engine: Engine,
        journal: Journal,
        config: SequencerConfig,
        wait: WaitPolicy,
        sink: Option<Box<dyn Sink>>,
        write: WriteSnapshot,
    ) -> Sequencer {
        let inbound = Arc::new(Inbound {
            queue: ArrayQueue::new(config.queue_capacity.max(1)),
            parked: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
            waker: sink.as_ref().and_then(|sink| sink.waker()),
        });
        let outbound = Arc::new(ArrayQueue::new(config.ring_capacity.max(1)));
        let (ring, shared) = (Arc::clone(&outbound), Arc::clone(&inbound));
        let thread = std::thread::Builder::new()
            .name("keel-sequencer".into())
            .spawn(move || {
                let _ = shared.thread.set(std::thread::current());
                let guard = EndGuard(Arc::clone(&shared));
                let result = run(engine, journal, &shared, ring, sink, config, wait, write);
                drop(guard);
                result
            })
            .expect("the sequencer thread can be spawned");
        Sequencer { inbound, outbound, thread: Some(thread) }
    }

    /// Queues a command; `tag` comes back with its outcome.
    pub fn submit(&self, tag: u64, command: Command, backpressure: Backpressure) -> Result<(), SubmitError> {
        let inbound = &self.inbound;
        if inbound.closed.load(Ordering::Relaxed) || inbound.ended.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let mut submission = Submission { tag, command };
        let mut waited = 0u32;
        loop {
            match inbound.queue.push(submission) {
                Ok(()) => {
                    inbound.unpark_if_parked();
                    return Ok(());
                }
                Err(back) => submission = back,
            }
            if backpressure == Backpressure::Reject {
                inbound.unpark_if_parked();
                return Err(SubmitError::Full(submission.command));
            }
            if inbound.ended.load(Ordering::Acquire) {
                return Err(SubmitError::Stopped);
            }
            // Full: make sure the thread runs, then back off (spin, yield, then short sleeps).
            inbound.unpark_if_parked();
            waited = waited.saturating_add(1);
            if waited < 64 {
                std::hint::spin_loop();
            } else if waited < 128 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Wakes the sequencer thread so that its [`Sink`] gets a call soon even if no command is
    /// queued (for instance after the sink was sent a message of its own). Cheap when the thread
    /// is already running.
    pub fn wake(&self) {
        self.inbound.woken.store(true, Ordering::Relaxed);
        self.inbound.unpark_if_parked();
    }

    /// The next published outcome, if any (never blocks). Always `None` with a [`Sink`].
    pub fn poll(&self) -> Option<Published> {
        self.outbound.pop()
    }

    /// A handle consumers on other threads can poll.
    pub fn events(&self) -> Arc<ArrayQueue<Published>> {
        Arc::clone(&self.outbound)
    }

    /// Stops accepting commands, lets the thread apply and commit everything queued, syncs the
    /// journal to disk, and returns the engine.
    pub fn shutdown(mut self) -> Result<Engine, SequencerError> {
        self.close();
        let thread = self.thread.take().expect("shutdown runs once");
        thread.join().unwrap_or(Err(SequencerError::Panicked))
    }

    fn close(&self) {
        self.inbound.closed.store(true, Ordering::SeqCst);
        if let Some(thread) = self.inbound.thread.get() {
            thread.unpark();
        }
        // The thread may be asleep in its sink's wait rather than parked.
        if let Some(waker) = &self.inbound.waker {
            waker();
        }
    }
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        self.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Milliseconds since the Unix epoch, never going backwards within a run.
fn wall_clock_ms(previous: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    now.max(previous)
}

/// Waits until a command is queued, the sink read input of its own into `input`, the sink asked
/// for a call, or the queue was closed; spins for `wait.spin` first, then sleeps — in the sink's
/// own wait when it has one (a gateway waiting on its sockets), else parked — for at most
/// `wait.idle`. Returns false on an idle timeout.
fn wait_for_work(
    inbound: &Inbound,
    wait: WaitPolicy,
    mut sink: Option<&mut Box<dyn Sink>>,
    input: &mut Vec<(u64, Command)>,
) -> bool {
    let ready = || {
        !inbound.queue.is_empty()
            || inbound.woken.load(Ordering::Relaxed)
            || inbound.closed.load(Ordering::Relaxed)
    };
    let mut ready_or_input = |sink: &mut Option<&mut Box<dyn Sink>>| {
        ready() || sink.as_mut().is_some_and(|sink| sink.poll_input(input))
    };
    if ready_or_input(&mut sink) {
        return true;
    }
    if !wait.spin.is_zero() {
        let until = Instant::now() + wait.spin;
        let mut spins = 0u32;
        loop {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
            if ready_or_input(&mut sink) {
                return true;
            }
            spins += 1;
            // With a sink every pass reads its sockets, which costs more than the clock.
            if (sink.is_some() || spins % 8 == 0) && Instant::now() >= until {
                break;
            }
        }
    }
    inbound.parked.store(true, Ordering::Relaxed);
    // Pairs with the fence in `unpark_if_parked` (see there).
    fence(Ordering::SeqCst);
    if ready_or_input(&mut sink) {
        inbound.parked.store(false, Ordering::Relaxed);
        return true;
    }
    let waited = sink.as_mut().is_some_and(|sink| sink.wait_for_input(wait.idle));
    if !waited {
        std::thread::park_timeout(wait.idle);
    }
    inbound.parked.store(false, Ordering::Relaxed);
    ready_or_input(&mut sink)
}

#[allow(clippy::too_many_arguments)] // private; called from one place, with everything it owns
fn run(
    mut engine: Engine,
    mut journal: Journal,
    inbound: &Inbound,
    ring: Arc<ArrayQueue<Published>>,
    mut sink: Option<Box<dyn Sink>>,
    config: SequencerConfig,
    wait: WaitPolicy,
    write: WriteSnapshot,
) -> Result<Engine, SequencerError> {
    // Started before the first command, so a writer that cannot start stops the sequencer before
    // it acknowledges anything rather than at its first snapshot.
    let mut snapshots = match config.snapshot_every {
        Some(every) => Some(Snapshots::start(every, write)?),
        None => None,
    };
    let max_batch = config.max_batch.max(1);
    let mut batch: Vec<(u64, Sequenced)> = Vec::with_capacity(max_batch);
    let mut outcomes: Vec<Published> = Vec::with_capacity(max_batch);
    // Event vectors a sink left behind, reused for the next commands' events.
    let mut spare_events: Vec<Vec<Event>> = Vec::with_capacity(max_batch);
    let mut follow_up: Vec<(u64, Command)> = Vec::new();
    let mut follow_now: Vec<(u64, Command)> = Vec::new();
    let mut payload = Vec::with_capacity(256);
    loop {
        if inbound.closed.load(Ordering::SeqCst) && inbound.queue.is_empty() {
            // Everything submitted has been applied, committed and published.
            break;
        }
        if follow_up.is_empty() && !wait_for_work(inbound, wait, sink.as_mut(), &mut follow_up) {
            // Idle timeout: a sink still gets its call, for its timers.
            if let Some(sink) = sink.as_mut() {
                sink.publish(&mut outcomes, &mut follow_up);
            }
            continue;
        }
        inbound.woken.store(false, Ordering::Relaxed);
        std::mem::swap(&mut follow_now, &mut follow_up);
        let mut time_ms = wall_clock_ms(engine.time_ms());
        let mut next_seq = engine.last_seq() + 1;
        batch.clear();
        // Follow-ups and the sink's input first, then the queue; at most `max_batch` in all, so
        // one burst of input cannot make a batch (and the wait for its acknowledgements) grow
        // without bound. What does not fit leads the next batch.
        let mut follow = follow_now.drain(..);
        while let Some((tag, command)) = (batch.len() < max_batch)
            .then(|| follow.next().or_else(|| inbound.queue.pop().map(|s| (s.tag, s.command))))
            .flatten()
        {
            time_ms = wall_clock_ms(time_ms);
            // Queries are answered but not journalled, so they take no sequence number of their own.
            let seq = if command.is_query() {
                next_seq - 1
            } else {
                next_seq += 1;
                next_seq - 1
            };
            batch.push((tag, Sequenced { seq, time_ms, command }));
        }
        follow_up.extend(follow);
        if batch.is_empty() {
            // Woken for the sink alone (or to close).
            if let Some(sink) = sink.as_mut() {
                sink.publish(&mut outcomes, &mut follow_up);
            }
            continue;
        }
        // Journal first, then apply: a command is in the journal before it has any effect.
        outcomes.clear();
        if let Some((_, first)) = batch.first() {
            engine.prefetch_now(&first.command);
        }
        for (i, (tag, command)) in batch.iter().enumerate() {
            // The batch is known: start loading the next commands' accounts now.
            let upcoming = |k: usize| batch.get(k).map(|(_, c)| &c.command);
            engine.prefetch([upcoming(i + 1), upcoming(i + 2), upcoming(i + 3)]);
            if !command.command.is_query() {
                payload.clear();
                codec::encode_into(command, &mut payload);
                journal.append(command.seq, &payload)?;
            }
            let mut events = spare_events.pop().unwrap_or_default();
            engine.apply(command, &mut events);
            if let Some(snapshots) = snapshots.as_mut() {
                snapshots.since += u64::from(!command.command.is_query());
            }
            outcomes.push(Published { seq: command.seq, tag: *tag, events });
        }
        batch.clear();
        journal.commit()?;
        match sink.as_mut() {
            Some(sink) => {
                sink.publish(&mut outcomes, &mut follow_up);
                for outcome in outcomes.drain(..) {
                    let mut events = outcome.events;
                    // Bounded: at most a batch of vectors, none grown large by a rare cascade.
                    if spare_events.len() < max_batch && events.capacity() <= SPARE_EVENTS_CAPACITY {
                        events.clear();
                        spare_events.push(events);
                    }
                }
            }
            None => {
                for outcome in outcomes.drain(..) {
                    ring.force_push(outcome);
                }
            }
        }
        if let Some(snapshots) = snapshots.as_mut() {
            snapshots.after_batch(&engine)?;
        }
    }
    journal.sync()?;
    if let Some(snapshots) = snapshots {
        snapshots.finish(&engine)?;
    }
    Ok(engine)
}

/// What the snapshot writer thread does with one encoded snapshot: write it durably as the state
/// after command `seq` and prune old ones. Boxed so tests can wrap the store's write.
type WriteSnapshot = Box<dyn FnMut(u64, &[u8]) -> Result<PathBuf, store::StoreError> + Send>;

/// The store's snapshot write for `config`'s directory and retention.
fn store_writer(config: &SequencerConfig) -> WriteSnapshot {
    let (dir, keep) = (config.store_dir.clone(), config.snapshots_kept);
    Box::new(move |seq, encoded| store::write_encoded_snapshot(&dir, seq, encoded, keep))
}

/// An engine encoded by [`store::encode_snapshot`]: the sequence number of the last command it
/// has applied, and its bytes.
type EncodedSnapshot = (u64, Vec<u8>);

/// The sequencer's snapshots: when one is due, and the writer thread that puts them on disk (see
/// the module documentation for the rules).
///
/// Only the encoding runs on the engine thread: it needs the engine between two commands, and
/// handing the engine itself to another thread would need it shared. At 100,000 accounts
/// (13.7 MiB) it takes 40–50 ms, about 40 % of a synchronous snapshot; the write, the fsyncs
/// and the pruning (which re-reads and checksums the kept snapshots) are the rest, and happen
/// here. The remaining pause is not small. Ways to remove it, none of them done yet:
///
/// - a replica engine on the writer side, fed the same sequenced commands (determinism makes its
///   state identical), which encodes while the engine runs: no pause, at the cost of applying
///   every command twice and holding the state twice;
/// - copy-on-write state (persistent maps, or frozen slab pages) so the engine can hand the
///   writer a cheap immutable view and keep mutating its own;
/// - a cheaper encoding (fixed-width integers or raw copies of plain-data arrays instead of
///   serde with varints), which shrinks the pause but keeps it proportional to the state;
/// - `fork()` for a copy-on-write image of the process, as some databases do — not safe with the
///   gateway's threads and locks, so not recommended here.
struct Snapshots {
    /// Commands between snapshots (at least 1).
    every: u64,
    /// State-changing commands applied since the last snapshot was handed to the writer.
    since: u64,
    /// Whether the writer has a snapshot it has not reported on yet.
    in_flight: bool,
    /// Encoded snapshots to the writer; capacity 1, and only sent to when nothing is in flight,
    /// so sending never blocks. Dropping it tells the writer to end.
    jobs: Option<SyncSender<EncodedSnapshot>>,
    /// One report per snapshot, in order.
    reports: Receiver<Result<PathBuf, store::StoreError>>,
    thread: Option<JoinHandle<()>>,
}

impl Snapshots {
    /// Starts the writer thread.
    fn start(every: u64, mut write: WriteSnapshot) -> Result<Snapshots, SequencerError> {
        let (jobs, inbox) = mpsc::sync_channel::<EncodedSnapshot>(1);
        let (outbox, reports) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("keel-snapshots".into())
            .spawn(move || {
                for (seq, encoded) in inbox {
                    if outbox.send(write(seq, &encoded)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|error| SequencerError::SnapshotWriter(format!("cannot start: {error}")))?;
        Ok(Snapshots {
            every: every.max(1),
            since: 0,
            in_flight: false,
            jobs: Some(jobs),
            reports,
            thread: Some(thread),
        })
    }

    /// Called on the engine thread after each committed batch: collects the writer's report if it
    /// has one (a failure stops the sequencer here), then hands over a snapshot if one is due and
    /// the writer is free. A due snapshot that finds the writer busy stays due (deferred).
    fn after_batch(&mut self, engine: &Engine) -> Result<(), SequencerError> {
        self.collect(false)?;
        if self.since >= self.every && !self.in_flight {
            self.hand_over(engine)?;
        }
        Ok(())
    }

    /// At shutdown: waits for the snapshot in flight; writes the deferred one, if one is due, and
    /// waits for it; ends the writer thread. Every failure is reported.
    fn finish(mut self, engine: &Engine) -> Result<(), SequencerError> {
        self.collect(true)?;
        if self.since >= self.every {
            self.hand_over(engine)?;
            self.collect(true)?;
        }
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(SequencerError::SnapshotWriter("the writer thread panicked".into())),
            _ => Ok(()),
        }
    }

    /// Encodes `engine` and sends it to the writer, which must be free.
    fn hand_over(&mut self, engine: &Engine) -> Result<(), SequencerError> {
        debug_assert!(!self.in_flight, "at most one snapshot in flight");
        let encoded = store::encode_snapshot(engine);
        let sent = self.jobs.as_ref().is_some_and(|jobs| jobs.send(encoded).is_ok());
        if !sent {
            return Err(SequencerError::SnapshotWriter("the writer thread has ended".into()));
        }
        self.in_flight = true;
        self.since = 0;
        Ok(())
    }

    /// Takes the writer's report on the snapshot in flight, waiting for it when `block`.
    fn collect(&mut self, block: bool) -> Result<(), SequencerError> {
        if !self.in_flight {
            return Ok(());
        }
        let report = if block {
            self.reports.recv().map_err(|_| TryRecvError::Disconnected)
        } else {
            self.reports.try_recv()
        };
        match report {
            Ok(written) => {
                self.in_flight = false;
                written.map(drop).map_err(SequencerError::Snapshot)
            }
            Err(TryRecvError::Empty) => Ok(()),
            // The writer's loop only ends when its inbox closes, so this is a panic mid-write.
            Err(TryRecvError::Disconnected) => {
                self.in_flight = false;
                Err(SequencerError::SnapshotWriter("the writer thread died mid-snapshot".into()))
            }
        }
    }
}

impl Drop for Snapshots {
    /// The sequencer stopped on an error (or `finish` already ran): end the writer, letting a
    /// write in progress complete rather than leaving the thread behind.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FlushPolicy;
    use keel_types::AccountId;
    use std::sync::Mutex;

    fn start(name: &str, sink: Option<Box<dyn Sink>>) -> (Sequencer, PathBuf) {
        start_snapshotting(name, sink, None)
    }

    /// A fresh store in a temporary directory, and a configuration keeping two snapshots.
    fn fresh_store(name: &str, snapshot_every: Option<u64>) -> (Engine, Journal, SequencerConfig) {
        let dir = std::env::temp_dir().join(format!("keel-sequencer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (engine, journal, _) = store::recover(&dir, FlushPolicy::Buffered).expect("fresh store");
        let config = SequencerConfig {
            queue_capacity: 8,
            max_batch: 4,
            ring_capacity: 64,
            snapshot_every,
            snapshots_kept: 2,
            store_dir: dir,
        };
        (engine, journal, config)
    }

    /// A sequencer on a fresh store in a temporary directory, keeping two snapshots.
    fn start_snapshotting(
        name: &str,
        sink: Option<Box<dyn Sink>>,
        snapshot_every: Option<u64>,
    ) -> (Sequencer, PathBuf) {
        let (engine, journal, config) = fresh_store(name, snapshot_every);
        let dir = config.store_dir.clone();
        let sequencer = match sink {
            Some(sink) => Sequencer::start_with_sink(engine, journal, config, WaitPolicy::default(), sink),
            None => Sequencer::start(engine, journal, config),
        };
        (sequencer, dir)
    }

    /// The snapshot files (`.snap`) in a store, as sequence numbers, newest first.
    fn snapshots_on_disk(dir: &std::path::Path) -> Vec<u64> {
        crate::snapshot_file::list_snapshots(dir.join(store::SNAPSHOT_DIR))
            .expect("snapshot directory")
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    }

    /// Outcomes from the ring until `count` have arrived, in arrival order (their tags).
    fn acknowledged(sequencer: &Sequencer, count: usize) -> Vec<u64> {
        let mut tags = Vec::new();
        wait_until(|| {
            while let Some(outcome) = sequencer.poll() {
                tags.push(outcome.tag);
            }
            tags.len() >= count
        });
        tags
    }

    /// Records what it is given; asks for one follow-up query after the first outcome.
    struct Recorder {
        seen: Arc<Mutex<Vec<(u64, u64)>>>,
        calls: Arc<Mutex<u64>>,
        asked: bool,
    }

    impl Sink for Recorder {
        fn publish(&mut self, outcomes: &mut Vec<Published>, follow_up: &mut Vec<(u64, Command)>) {
            *self.calls.lock().expect("lock") += 1;
            for outcome in outcomes.drain(..) {
                self.seen.lock().expect("lock").push((outcome.tag, outcome.seq));
            }
            if !self.asked && !self.seen.lock().expect("lock").is_empty() {
                self.asked = true;
                follow_up.push((999, Command::Digest));
            }
        }
    }

    /// Submits `OpenAccount` for each of `accounts`, tagged with the account number.
    fn open_accounts(sequencer: &Sequencer, accounts: std::ops::RangeInclusive<u32>) {
        for account in accounts {
            sequencer
                .submit(
                    u64::from(account),
                    Command::OpenAccount { account: AccountId(account) },
                    Backpressure::Wait,
                )
                .expect("queued");
        }
    }

    fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn snapshots_are_on_disk_at_shutdown_and_recover_the_same_state() {
        let (sequencer, dir) = start_snapshotting("snapshots", None, Some(10));
        open_accounts(&sequencer, 1..=45);
        let engine = sequencer.shutdown().expect("clean");
        assert_eq!(engine.last_seq(), 45);
        let snapshots: Vec<_> = std::fs::read_dir(dir.join(store::SNAPSHOT_DIR))
            .expect("snapshot directory")
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".snap"))
            .collect();
        assert_eq!(snapshots.len(), 2, "the newest two are kept");
        let (recovered, _, report) = store::recover(&dir, FlushPolicy::Buffered).expect("recovers");
        // Snapshots are taken between batches, once ten commands have passed since the last.
        assert!(report.snapshot_seq.is_some_and(|seq| seq > 45 - 10 - 4), "{report:?}");
        assert_eq!(recovered.digest(), engine.digest());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn commands_are_acknowledged_while_a_snapshot_is_being_written() {
        // The writer thread is held inside its first snapshot until the test lets it go, standing
        // in for a slow disk; the engine thread must not wait for it.
        let (engine, journal, config) = fresh_store("in-flight", Some(1));
        let dir = config.store_dir.clone();
        let (started_tx, started) = mpsc::channel::<u64>();
        let (release, released) = mpsc::channel::<()>();
        let mut real = store_writer(&config);
        let gated: WriteSnapshot = Box::new(move |seq, encoded| {
            let _ = started_tx.send(seq);
            // Returns once the test drops `release`; from then on writes go straight through.
            let _ = released.recv();
            real(seq, encoded)
        });
        let sequencer = Sequencer::spawn(engine, journal, config, WaitPolicy::default(), None, gated);

        open_accounts(&sequencer, 1..=1);
        assert_eq!(acknowledged(&sequencer, 1), vec![1]);
        let first =
            started.recv_timeout(Duration::from_secs(10)).expect("the writer starts the first snapshot");
        assert_eq!(first, 1, "due after the first command");

        // Forty more commands, each making a snapshot due (every = 1), all acknowledged while the
        // first snapshot is still being written.
        open_accounts(&sequencer, 2..=41);
        assert_eq!(acknowledged(&sequencer, 40), (2..=41).collect::<Vec<u64>>());
        assert!(snapshots_on_disk(&dir).is_empty(), "the writer is still inside the first snapshot");

        // Let the writer go. Shutdown waits for it and then writes the deferred snapshot, of the
        // state after the last command. The forty that fell due meanwhile were deferred, not
        // queued: after the first, the writer is given exactly one more.
        drop(release);
        let engine = sequencer.shutdown().expect("no snapshot error");
        assert_eq!(engine.last_seq(), 41);
        assert_eq!(started.try_iter().collect::<Vec<_>>(), vec![41], "one deferred snapshot, at shutdown");
        assert_eq!(snapshots_on_disk(&dir), vec![41, 1]);
        let (recovered, _, report) = store::recover(&dir, FlushPolicy::Buffered).expect("recovers");
        assert_eq!(report.snapshot_seq, Some(41));
        assert_eq!(report.replayed, 0);
        assert_eq!(recovered.digest(), engine.digest());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_background_write_stops_the_sequencer_at_the_next_batch_and_shutdown_reports_it() {
        let (engine, journal, config) = fresh_store("write-fails", Some(1));
        let dir = config.store_dir.clone();
        let failing: WriteSnapshot = Box::new(|_, _| {
            Err(store::StoreError::CreateDir {
                path: PathBuf::from("snapshots"),
                source: std::io::Error::other("disk full"),
            })
        });
        let sequencer = Sequencer::spawn(engine, journal, config, WaitPolicy::default(), None, failing);
        // The first command's snapshot fails in the background; a later batch collects the report
        // and stops the sequencer, after which submissions are refused.
        let mut account = 0u32;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            account += 1;
            match sequencer.submit(
                0,
                Command::OpenAccount { account: AccountId(account) },
                Backpressure::Wait,
            ) {
                Ok(()) => {}
                Err(SubmitError::Stopped) => break,
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert!(Instant::now() < deadline, "the failure never stopped the sequencer");
            std::thread::sleep(Duration::from_millis(1));
        }
        match sequencer.shutdown() {
            Err(SequencerError::Snapshot(error)) => {
                assert!(error.to_string().contains("disk full"), "{error}")
            }
            other => panic!("the write failure was lost: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn snapshots_due_after_every_command_never_stall_or_fail_and_the_newest_recovers() {
        // Every batch makes a snapshot due, mostly while the real writer is still busy with the
        // last one, so deferral, the hand-over and the report collection run on every batch.
        let (sequencer, dir) = start_snapshotting("every-command", None, Some(1));
        // Drained as we go: the ring holds only 64 outcomes.
        let mut tags = Vec::new();
        for account in 1..=2_000u32 {
            sequencer
                .submit(
                    u64::from(account),
                    Command::OpenAccount { account: AccountId(account) },
                    Backpressure::Wait,
                )
                .expect("queued");
            tags.extend(std::iter::from_fn(|| sequencer.poll()).map(|outcome| outcome.tag));
        }
        let left = 2_000 - tags.len();
        tags.extend(acknowledged(&sequencer, left));
        assert_eq!(tags, (1..=2_000).collect::<Vec<u64>>(), "every command acknowledged, in order");
        let engine = sequencer.shutdown().expect("no snapshot error surfaced");
        assert_eq!(engine.last_seq(), 2_000);
        let on_disk = snapshots_on_disk(&dir);
        assert_eq!(on_disk.len(), 2, "the newest two are kept: {on_disk:?}");
        // The newest snapshot is the state at shutdown: every command made one due.
        assert_eq!(on_disk[0], 2_000);
        let (recovered, _, report) = store::recover(&dir, FlushPolicy::Buffered).expect("recovers");
        assert_eq!(report.snapshot_seq, Some(2_000), "{report}");
        assert!(report.skipped_snapshots.is_empty(), "{report}");
        assert_eq!(recovered.digest(), engine.digest());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_ring_gets_every_outcome_in_order_and_shutdown_applies_everything_queued() {
        let (sequencer, dir) = start("ring", None);
        open_accounts(&sequencer, 1..=20);
        let mut tags = Vec::new();
        wait_until(|| {
            while let Some(outcome) = sequencer.poll() {
                tags.push(outcome.tag);
            }
            tags.len() == 20
        });
        assert_eq!(tags, (1..=20).collect::<Vec<u64>>());
        let engine = sequencer.shutdown().expect("clean");
        assert_eq!(engine.last_seq(), 20);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_sink_sees_every_outcome_on_the_sequencer_thread_and_its_follow_ups_run_next() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(Mutex::new(0));
        let sink = Recorder { seen: Arc::clone(&seen), calls: Arc::clone(&calls), asked: false };
        let (sequencer, dir) = start("sink", Some(Box::new(sink)));
        open_accounts(&sequencer, 1..=10);
        wait_until(|| seen.lock().expect("lock").len() == 11);
        assert!(sequencer.poll().is_none(), "the ring stays empty with a sink");
        let seen = seen.lock().expect("lock").clone();
        let opened: Vec<(u64, u64)> = seen.iter().copied().filter(|(tag, _)| *tag != 999).collect();
        assert_eq!(
            opened,
            (1..=10).map(|i| (i, i)).collect::<Vec<_>>(),
            "in order, one sequence number each"
        );
        // The follow-up query took no sequence number of its own.
        let query = seen.iter().find(|(tag, _)| *tag == 999).expect("the follow-up ran");
        assert!(query.1 >= 1 && query.1 <= 10);
        // `wake` gives the sink a call with nothing to publish.
        let before = *calls.lock().expect("lock");
        sequencer.wake();
        wait_until(|| *calls.lock().expect("lock") > before);
        let engine = sequencer.shutdown().expect("clean");
        assert_eq!(engine.last_seq(), 10);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_queue_hands_the_command_back_and_nothing_is_lost() {
        let (sequencer, dir) = start("full", None);
        let mut full = 0;
        for account in 1..=10_000u32 {
            match sequencer.submit(
                0,
                Command::OpenAccount { account: AccountId(account) },
                Backpressure::Reject,
            ) {
                Ok(()) => {}
                Err(SubmitError::Full(Command::OpenAccount { .. })) => full += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        // Whether the thread kept up or not, nothing was lost: every command was queued or handed back.
        let engine = sequencer.shutdown().expect("clean");
        assert_eq!(engine.last_seq() + full, 10_000);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A sink with input of its own, like the gateway's sockets: commands appear in `pending`
    /// and it sleeps on a condition variable that its waker signals.
    struct InputSink {
        pending: Arc<std::sync::Mutex<Vec<(u64, Command)>>>,
        seen: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
        signal: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    }

    impl Sink for InputSink {
        fn publish(&mut self, outcomes: &mut Vec<Published>, _: &mut Vec<(u64, Command)>) {
            if !outcomes.is_empty() {
                self.batches.lock().expect("lock").push(outcomes.len());
            }
            // Read in place, like the gateway: the sequencer reuses the event vectors, and each
            // outcome must still carry exactly its own command's events.
            for o in outcomes.iter() {
                assert_eq!(o.events.len(), 1, "one event per opened account: {:?}", o.events);
            }
            self.seen.lock().expect("lock").extend(outcomes.iter().map(|o| (o.tag, o.seq)));
        }

        fn poll_input(&mut self, input: &mut Vec<(u64, Command)>) -> bool {
            let mut pending = self.pending.lock().expect("lock");
            input.append(&mut pending);
            !input.is_empty()
        }

        fn wait_for_input(&mut self, timeout: Duration) -> bool {
            let (flag, condvar) = &*self.signal;
            let guard = flag.lock().expect("lock");
            let (mut guard, _) = condvar.wait_timeout_while(guard, timeout, |set| !*set).expect("lock");
            *guard = false;
            true
        }

        fn waker(&self) -> Option<Waker> {
            let signal = Arc::clone(&self.signal);
            Some(Arc::new(move || {
                *signal.0.lock().expect("lock") = true;
                signal.1.notify_all();
            }))
        }
    }

    #[test]
    fn a_sinks_own_input_is_applied_in_order_in_capped_batches_and_close_wakes_its_wait() {
        let (engine, journal, config) = fresh_store("sink-input", None);
        let dir = config.store_dir.clone();
        let pending = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = InputSink {
            pending: Arc::clone(&pending),
            seen: Arc::clone(&seen),
            batches: Arc::clone(&batches),
            signal: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
        };
        // A long idle sleep: only a wake-up through the sink's waker can end it in time.
        let wait = WaitPolicy { spin: Duration::ZERO, idle: Duration::from_secs(30) };
        let sequencer = Sequencer::start_with_sink(engine, journal, config, wait, Box::new(sink));
        std::thread::sleep(Duration::from_millis(20)); // asleep in the sink's wait by now
        pending
            .lock()
            .expect("lock")
            .extend((1..=10u32).map(|a| (u64::from(a), Command::OpenAccount { account: AccountId(a) })));
        sequencer.wake();
        wait_until(|| seen.lock().expect("lock").len() == 10);
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen, (1..=10).map(|a| (a, a)).collect::<Vec<_>>(), "applied in order, seq 1..=10");
        let batches = batches.lock().expect("lock").clone();
        assert!(batches.iter().all(|&n| n <= 4), "max_batch is 4: {batches:?}");
        assert_eq!(batches.iter().sum::<usize>(), 10);

        std::thread::sleep(Duration::from_millis(20)); // asleep again
        let started = Instant::now();
        let engine = sequencer.shutdown().expect("clean");
        assert!(started.elapsed() < Duration::from_secs(5), "close woke the sink's wait");
        assert_eq!(engine.last_seq(), 10);
        let _ = std::fs::remove_dir_all(dir);
    }
}
