//! The operating-system calls the standard library does not offer: a send and a receive that never
//! block on a blocking socket (the session writer thread keeps the socket blocking), and `poll`
//! over many sockets.
//!
//! Declared directly against the C library (which the standard library links already), like
//! `signal.rs`, rather than through a crate. The gateway serves sessions on Linux only: elsewhere
//! these compile to stand-ins (the send and the receive report "would block", the wait sleeps a
//! millisecond) so the rest of the workspace builds, but no session's input is ever read.

use std::io;
use std::net::TcpStream;

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::{c_int, c_void};

    pub(super) const MSG_DONTWAIT: c_int = 0x40;
    pub(super) const MSG_NOSIGNAL: c_int = 0x4000;

    pub(super) const POLLIN: i16 = 0x001;

    /// `struct pollfd`.
    #[repr(C)]
    pub(super) struct PollFd {
        pub(super) fd: c_int,
        pub(super) events: i16,
        pub(super) revents: i16,
    }

    unsafe extern "C" {
        pub(super) fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
        pub(super) fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
        pub(super) fn poll(fds: *mut PollFd, nfds: std::ffi::c_ulong, timeout: c_int) -> c_int;
    }
}

/// Runs a system call that returns a byte count or −1 with `errno`, again while a signal
/// interrupts it: the count, or the error it stopped on.
#[cfg(target_os = "linux")]
fn retry_interrupted(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let done = call();
        if done >= 0 {
            return Ok(done as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Sends as much of `bytes` as the socket takes now, without blocking (and without `SIGPIPE`).
/// `Err` with [`io::ErrorKind::WouldBlock`] when it takes nothing.
pub(crate) fn send_nonblocking(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        retry_interrupted(|| {
            // SAFETY: the pointer and length describe `bytes`, which outlives the call; `send`
            // only reads them; the descriptor belongs to `stream`, which is open.
            unsafe {
                linux::send(
                    stream.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    linux::MSG_DONTWAIT | linux::MSG_NOSIGNAL,
                )
            }
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stream, bytes);
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Receives what the socket holds now, without blocking: `Ok(0)` when the peer closed, `Err` with
/// [`io::ErrorKind::WouldBlock`] when there is nothing.
pub(crate) fn recv_nonblocking(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        retry_interrupted(|| {
            // SAFETY: the pointer and length describe `buf`, which outlives the call and which
            // `recv` writes at most `len` bytes into; the descriptor belongs to `stream`, which is
            // open.
            unsafe {
                linux::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), linux::MSG_DONTWAIT)
            }
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stream, buf);
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Waits until one of the descriptors `fds` has something to read (data, or the peer's close) or
/// `timeout` passes. Which one is not reported: the caller tries them all without blocking. Runs
/// only when the caller is idle, so the small array it builds costs nothing that matters.
pub(crate) fn wait_readable(fds: &[i32], timeout: std::time::Duration) {
    #[cfg(target_os = "linux")]
    {
        let mut polled: Vec<linux::PollFd> =
            fds.iter().map(|&fd| linux::PollFd { fd, events: linux::POLLIN, revents: 0 }).collect();
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as std::ffi::c_int;
        // SAFETY: the pointer and count describe `polled`, which outlives the call; `poll` writes
        // only the `revents` fields. An error (EINTR) simply ends the wait early.
        unsafe {
            linux::poll(polled.as_mut_ptr(), polled.len() as std::ffi::c_ulong, ms);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fds;
        std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
    }
}
