//! A blocking client for the gateway: connect, log on, send requests (one at a time or batched into
//! one write), receive decoded server messages with a timeout.

use crate::codec::{ClientMessage, DecodeError, ServerMessage, key_bytes};
use keel_types::AccountId;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Socket failure.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a valid frame.
    #[error("undecodable frame from the server: {0}")]
    Decode(#[from] DecodeError),
    /// Nothing arrived in time.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server answered something unexpected.
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<ServerMessage>),
}

/// Reads frames from a stream and decodes them.
pub struct Receiver {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Option<Duration>,
}

impl Receiver {
    fn new(stream: TcpStream) -> Receiver {
        Receiver { stream, buf: vec![0; 256 * 1024], start: 0, end: 0, timeout: None }
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((message, used)) = ServerMessage::decode(&self.buf[self.start..self.end])? {
                self.start += used;
                return Ok(message);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            // Re-arming the timeout is a system call: only when it changes noticeably.
            let wanted = left.max(Duration::from_millis(1));
            if self.timeout.is_none_or(|t| t > wanted || t * 2 < wanted) {
                self.stream.set_read_timeout(Some(wanted))?;
                self.timeout = Some(wanted);
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.end += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives until `pick` returns something, skipping other messages; fails at `timeout`.
    pub fn recv_until<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.recv(left)?;
            if let Some(found) = pick(&message) {
                return Ok(found);
            }
        }
    }
}

/// Writes frames to a stream, batching queued ones into one write.
pub struct Sender {
    stream: TcpStream,
    out: Vec<u8>,
}

impl Sender {
    /// Queues a message for the next [`Sender::flush`].
    pub fn queue(&mut self, message: &ClientMessage) {
        message.encode_into(&mut self.out);
    }

    /// Writes everything queued in one system call.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends one message now.
    pub fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        self.queue(message);
        self.flush()
    }

    /// Sends raw bytes (for testing the server against malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }
}

/// A connection to the gateway.
pub struct Client {
    /// The sending half.
    pub sender: Sender,
    /// The receiving half.
    pub receiver: Receiver,
}

/// What a successful logon returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logon {
    /// The account.
    pub account: AccountId,
    /// The server's session id.
    pub session: u32,
    /// Heartbeat interval the server expects (ms).
    pub heartbeat_ms: u32,
}

impl Client {
    /// Connects (without logging on).
    pub fn connect(address: SocketAddr) -> Result<Client, ClientError> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        let receiver = Receiver::new(stream.try_clone()?);
        Ok(Client { sender: Sender { stream, out: Vec::with_capacity(64 * 1024) }, receiver })
    }

    /// Connects and logs on as `account` with `key`.
    pub fn logon(address: SocketAddr, account: AccountId, key: &str) -> Result<(Client, Logon), ClientError> {
        let mut client = Client::connect(address)?;
        client.sender.send(&ClientMessage::Logon { account, key: key_bytes(key) })?;
        match client.receiver.recv(Duration::from_secs(5))? {
            ServerMessage::LogonAck { account, session, heartbeat_ms } => {
                Ok((client, Logon { account, session, heartbeat_ms }))
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends one message now.
    pub fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        self.sender.send(message)
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        self.receiver.recv(timeout)
    }

    /// Closes both directions.
    pub fn close(&self) {
        let _ = self.sender.stream.shutdown(Shutdown::Both);
    }

    /// The two halves, for a sending thread and a receiving thread.
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }

    /// The socket itself, with the bytes already received but not yet decoded (the start of the
    /// next frame), for a caller that drives the connection its own way (the load generator's
    /// non-blocking loop) after logging on here. Any read timeout set by `recv` is cleared.
    pub fn into_stream(self) -> Result<(TcpStream, Vec<u8>), ClientError> {
        let Receiver { buf, start, end, .. } = self.receiver;
        self.sender.stream.set_read_timeout(None)?;
        Ok((self.sender.stream, buf[start..end].to_vec()))
    }
}
