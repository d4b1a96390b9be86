//! A session's bounded outbound buffer and the writer thread that drains it to the socket.
//!
//! Producers (the dispatcher, the session's reader) append encoded frames under a short lock and
//! wake the writer; the writer swaps the whole buffer out and writes it in one system call, which
//! batches frames under load. The buffer is bounded in bytes: a producer that would overflow it
//! marks the session as a slow consumer instead of waiting, so a client that does not read can
//! never stall the dispatcher, the engine or any other session.

use crate::codec::{DisconnectReason, ServerMessage};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Buffered frames plus the reason the session is ending, if it is.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closing: Option<(DisconnectReason, String)>,
}

/// What became of a pushed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// The buffer overflowed with this message: the session now ends as a slow consumer.
    Overflowed,
    /// The session was already ending; the message was dropped.
    Closed,
}

/// The outbound side of one session.
pub struct Outbound {
    pending: Mutex<Pending>,
    limit: usize,
    writer: OnceLock<Thread>,
    closed: AtomicBool,
}

impl Outbound {
    /// An empty buffer that holds at most `limit` bytes.
    pub fn new(limit: usize) -> Outbound {
        Outbound {
            pending: Mutex::new(Pending::default()),
            limit,
            writer: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A poisoned lock only means another thread panicked mid-append; the bytes are still frames.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one message, or ends the session as a slow consumer when the buffer would exceed
    /// its limit. Does not wake the writer: call [`Outbound::wake`] after a batch.
    pub fn push(&self, message: &ServerMessage) -> Push {
        let mut pending = self.lock();
        if pending.closing.is_some() {
            return Push::Closed;
        }
        let before = pending.bytes.len();
        message.encode_into(&mut pending.bytes);
        if pending.bytes.len() > self.limit {
            pending.bytes.truncate(before);
            let text = format!("outbound buffer of {} bytes overflowed", self.limit);
            // Whatever is queued is dropped: the reason must reach the client before anything else.
            pending.bytes.clear();
            pending.closing = Some((DisconnectReason::SlowConsumer, text));
            drop(pending);
            self.wake();
            return Push::Overflowed;
        }
        Push::Queued
    }

    /// Ends the session after the queued frames, with a final disconnect frame giving `reason`.
    pub fn close(&self, reason: DisconnectReason, text: impl Into<String>) {
        let mut pending = self.lock();
        if pending.closing.is_none() {
            pending.closing = Some((reason, text.into()));
        }
        drop(pending);
        self.wake();
    }

    /// True once the session is ending.
    pub fn is_closing(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.lock().closing.is_some()
    }

    /// Wakes the writer thread.
    pub fn wake(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Runs the writer on the current thread until the session ends; writes a heartbeat when
    /// nothing was sent for `heartbeat`. Returns why the session ended.
    pub fn run_writer(&self, mut socket: TcpStream, heartbeat: Duration) -> (DisconnectReason, String) {
        let _ = self.writer.set(std::thread::current());
        let mut out = Vec::with_capacity(64 * 1024);
        let mut last_write = Instant::now();
        loop {
            let closing = {
                let mut pending = self.lock();
                std::mem::swap(&mut out, &mut pending.bytes);
                pending.closing.clone()
            };
            if out.is_empty() && closing.is_none() && last_write.elapsed() >= heartbeat {
                ServerMessage::Heartbeat.encode_into(&mut out);
            }
            if !out.is_empty() {
                if socket.write_all(&out).is_err() {
                    self.closed.store(true, Ordering::Release);
                    let _ = socket.shutdown(Shutdown::Both);
                    let (reason, text) = closing.unwrap_or((DisconnectReason::Shutdown, String::new()));
                    return (reason, format!("{text} (connection lost while writing)"));
                }
                out.clear();
                last_write = Instant::now();
            }
            if let Some((reason, text)) = closing {
                // Frames queued after the swap are still delivered before the final frame.
                let mut pending = self.lock();
                out.append(&mut pending.bytes);
                drop(pending);
                ServerMessage::Disconnect { reason, text: text.clone() }.encode_into(&mut out);
                let _ = socket.write_all(&out);
                let _ = socket.flush();
                self.closed.store(true, Ordering::Release);
                // Write side only: the reader drains what the client still sends, so the close
                // does not reset the connection and destroy the frames in flight.
                let _ = socket.shutdown(Shutdown::Write);
                return (reason, text);
            }
            std::thread::park_timeout(
                heartbeat.saturating_sub(last_write.elapsed()).max(Duration::from_millis(1)),
            );
        }
    }
}
