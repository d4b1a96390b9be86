//! A session's bounded outbound buffer, written to the socket directly by whoever fills it, with a
//! writer thread for the rest.
//!
//! Producers (the dispatcher and the sessions' inbound side, both on the sequencer thread) append
//! encoded frames under a short lock and then [`Outbound::flush`]: a non-blocking send of
//! everything buffered, in one system call, straight from the producing thread — so an acknowledgement leaves the engine's
//! thread without waking any other. Whatever the socket does not take at once (a client that reads
//! slowly) stays buffered and becomes the session writer thread's job: it waits until the socket is
//! writable, writes the backlog, and hands the socket back. While it holds a backlog, producers only
//! append, so frames never overtake each other.
//!
//! The buffer is bounded in bytes: a producer that would overflow it marks the session as a slow
//! consumer instead of waiting, so a client that does not read can never stall the dispatcher, the
//! engine or any other session. The writer thread also sends heartbeats and the final disconnect.

use crate::codec::{DisconnectReason, ServerMessage};
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Buffered frames plus the reason the session is ending, if it is.
struct Pending {
    bytes: Vec<u8>,
    closing: Option<(DisconnectReason, String)>,
    /// The writer thread owns the socket's write side (it is writing a backlog): producers only
    /// append.
    backlog: bool,
    /// When bytes last went out (for heartbeats).
    last_write: Instant,
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
    /// The socket producers send to directly.
    socket: TcpStream,
    closed: AtomicBool,
}

impl Outbound {
    /// An empty buffer that holds at most `limit` bytes; [`Outbound::flush`] sends straight to
    /// `socket` (a clone of the writer's).
    pub fn new(limit: usize, socket: TcpStream) -> Outbound {
        Outbound {
            pending: Mutex::new(Pending {
                bytes: Vec::with_capacity(16 * 1024),
                closing: None,
                backlog: false,
                last_write: Instant::now(),
            }),
            limit,
            writer: OnceLock::new(),
            socket,
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A poisoned lock only means another thread panicked mid-append; the bytes are still frames.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one message, or ends the session as a slow consumer when the buffer would exceed
    /// its limit. Does not send: call [`Outbound::flush`] after a batch.
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

    /// Sends what is buffered: directly, without blocking, when the socket takes it; otherwise
    /// (or for what it does not take) by waking the writer thread.
    pub fn flush(&self) {
        let mut pending = self.lock();
        if pending.bytes.is_empty() {
            return;
        }
        if pending.backlog || pending.closing.is_some() {
            drop(pending);
            self.wake();
            return;
        }
        let socket = &self.socket;
        let mut written = 0;
        let total = pending.bytes.len();
        while written < total {
            match crate::sys::send_nonblocking(socket, &pending.bytes[written..total]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Would block, or failed: the writer thread takes over (and reports a failure).
                Err(_) => break,
            }
        }
        if written > 0 {
            pending.last_write = Instant::now();
        }
        if written == total {
            pending.bytes.clear();
            return;
        }
        pending.bytes.drain(..written);
        pending.backlog = true;
        drop(pending);
        self.wake();
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

    /// Runs the writer on the current thread until the session ends: writes backlogs, a heartbeat
    /// when nothing was sent for `heartbeat`, and the final disconnect. Returns why the session
    /// ended.
    pub fn run_writer(&self, mut socket: TcpStream, heartbeat: Duration) -> (DisconnectReason, String) {
        let _ = self.writer.set(std::thread::current());
        let mut out = Vec::with_capacity(64 * 1024);
        loop {
            let (closing, idle_for) = {
                let mut pending = self.lock();
                let closing = pending.closing.clone();
                if closing.is_none() && pending.bytes.is_empty() && pending.last_write.elapsed() >= heartbeat
                {
                    ServerMessage::Heartbeat.encode_into(&mut pending.bytes);
                }
                if closing.is_none() && !pending.bytes.is_empty() {
                    // Producers only append until this backlog is written.
                    std::mem::swap(&mut out, &mut pending.bytes);
                    pending.backlog = true;
                }
                (closing, pending.last_write.elapsed())
            };
            if let Some((reason, text)) = closing {
                // Frames queued before the close are still delivered before the final frame.
                let mut pending = self.lock();
                out.append(&mut pending.bytes);
                drop(pending);
                ServerMessage::Disconnect { reason, text: text.clone() }.encode_into(&mut out);
                let _ = write_blocking(&mut socket, &out);
                let _ = socket.flush();
                self.closed.store(true, Ordering::Release);
                // Write side only: the session's closer drains what the client still sends, so the
                // close does not reset the connection and destroy the frames in flight.
                let _ = socket.shutdown(Shutdown::Write);
                return (reason, text);
            }
            if !out.is_empty() {
                if write_blocking(&mut socket, &out).is_err() {
                    self.closed.store(true, Ordering::Release);
                    let _ = socket.shutdown(Shutdown::Both);
                    let closing = self.lock().closing.clone();
                    let (reason, text) = closing.unwrap_or((DisconnectReason::Shutdown, String::new()));
                    return (reason, format!("{text} (connection lost while writing)"));
                }
                out.clear();
                let mut pending = self.lock();
                pending.last_write = Instant::now();
                if pending.bytes.is_empty() {
                    // Caught up: producers may send directly again.
                    pending.backlog = false;
                }
                continue;
            }
            std::thread::park_timeout(heartbeat.saturating_sub(idle_for).max(Duration::from_millis(1)));
        }
    }
}

/// Writes all of `bytes` with blocking writes; the socket's write timeout (the idle timeout)
/// bounds how long a client that does not read can hold the writer.
fn write_blocking(socket: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    socket.write_all(bytes)
}
