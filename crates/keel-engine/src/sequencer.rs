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
//! Events go out through a bounded ring that never blocks the engine: if consumers fall more than
//! the ring's capacity behind, the oldest batches are overwritten and a consumer sees the gap in
//! the sequence numbers (and can fill it from the journal).

use crate::codec;
use crate::command::{Command, Sequenced};
use crate::engine::Engine;
use crate::event::Event;
use crate::journal::{Journal, JournalError};
use crate::store;
use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TrySendError};
use crossbeam::queue::ArrayQueue;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    /// A snapshot could not be written.
    #[error("snapshot failure, sequencer stopped: {0}")]
    Snapshot(#[from] store::StoreError),
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
    /// Write a snapshot after this many commands (none when `None`).
    pub snapshot_every: Option<u64>,
    /// Snapshots kept on disk.
    pub snapshots_kept: usize,
    /// The store directory (for snapshots).
    pub store_dir: PathBuf,
}

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

/// A running sequencer.
pub struct Sequencer {
    inbound: Option<Sender<Submission>>,
    outbound: Arc<ArrayQueue<Published>>,
    thread: Option<JoinHandle<Result<Engine, SequencerError>>>,
}

impl Sequencer {
    /// Starts the sequencer thread, which takes ownership of `engine` and `journal`.
    pub fn start(engine: Engine, journal: Journal, config: SequencerConfig) -> Sequencer {
        let (inbound, receiver) = channel::bounded(config.queue_capacity);
        let outbound = Arc::new(ArrayQueue::new(config.ring_capacity.max(1)));
        let ring = Arc::clone(&outbound);
        let thread = std::thread::Builder::new()
            .name("keel-sequencer".into())
            .spawn(move || run(engine, journal, receiver, ring, config))
            .expect("the sequencer thread can be spawned");
        Sequencer { inbound: Some(inbound), outbound, thread: Some(thread) }
    }

    /// Queues a command; `tag` comes back with its outcome.
    pub fn submit(&self, tag: u64, command: Command, backpressure: Backpressure) -> Result<(), SubmitError> {
        let inbound = self.inbound.as_ref().ok_or(SubmitError::Stopped)?;
        let submission = Submission { tag, command };
        match backpressure {
            Backpressure::Wait => inbound.send(submission).map_err(|_| SubmitError::Stopped),
            Backpressure::Reject => inbound.try_send(submission).map_err(|error| match error {
                TrySendError::Full(submission) => SubmitError::Full(submission.command),
                TrySendError::Disconnected(_) => SubmitError::Stopped,
            }),
        }
    }

    /// The next published outcome, if any (never blocks).
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
        self.inbound.take();
        let thread = self.thread.take().expect("shutdown runs once");
        thread.join().unwrap_or(Err(SequencerError::Panicked))
    }
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        self.inbound.take();
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

fn run(
    mut engine: Engine,
    mut journal: Journal,
    receiver: Receiver<Submission>,
    ring: Arc<ArrayQueue<Published>>,
    config: SequencerConfig,
) -> Result<Engine, SequencerError> {
    let mut batch: Vec<(u64, Sequenced)> = Vec::with_capacity(config.max_batch);
    let mut outcomes: Vec<Published> = Vec::with_capacity(config.max_batch);
    let mut payload = Vec::with_capacity(256);
    let mut since_snapshot = 0u64;
    loop {
        // Block for the first command of a batch, then take whatever else is already queued.
        let first = match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(submission) => submission,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut time_ms = wall_clock_ms(engine.time_ms());
        let mut next_seq = engine.last_seq() + 1;
        batch.clear();
        let mut next = Some(first);
        while let Some(submission) = next {
            time_ms = wall_clock_ms(time_ms);
            // Queries are answered but not journalled, so they take no sequence number of their own.
            let seq = if submission.command.is_query() {
                next_seq - 1
            } else {
                next_seq += 1;
                next_seq - 1
            };
            batch.push((submission.tag, Sequenced { seq, time_ms, command: submission.command }));
            next = if batch.len() < config.max_batch { receiver.try_recv().ok() } else { None };
        }
        // Journal first, then apply: a command is in the journal before it has any effect.
        outcomes.clear();
        for (tag, command) in batch.drain(..) {
            if !command.command.is_query() {
                payload.clear();
                codec::encode_into(&command, &mut payload);
                journal.append(command.seq, &payload)?;
            }
            let mut events = Vec::new();
            engine.apply(&command, &mut events);
            since_snapshot += u64::from(!command.command.is_query());
            outcomes.push(Published { seq: command.seq, tag, events });
        }
        journal.commit()?;
        for outcome in outcomes.drain(..) {
            ring.force_push(outcome);
        }
        if let Some(every) = config.snapshot_every
            && since_snapshot >= every
        {
            store::snapshot(&config.store_dir, &engine, config.snapshots_kept)?;
            since_snapshot = 0;
        }
    }
    journal.sync()?;
    Ok(engine)
}
