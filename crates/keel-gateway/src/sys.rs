//! The two operating-system calls the standard library does not offer: a send that never blocks
//! on a blocking socket, and the timer slack of a thread.
//!
//! Declared directly against the C library (which the standard library links already), like
//! `signal.rs`, rather than through a crate. Linux only; elsewhere the functions report
//! "would block" / do nothing, and the gateway falls back to its writer threads.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::{c_int, c_long, c_ulong, c_void};

    pub(super) const MSG_DONTWAIT: c_int = 0x40;
    pub(super) const MSG_NOSIGNAL: c_int = 0x4000;
    pub(super) const PR_SET_TIMERSLACK: c_int = 29;

    unsafe extern "C" {
        pub(super) fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
        pub(super) fn prctl(
            option: c_int,
            arg2: c_ulong,
            arg3: c_ulong,
            arg4: c_ulong,
            arg5: c_ulong,
        ) -> c_long;
    }
}

/// Sends as much of `bytes` as the socket takes now, without blocking (and without `SIGPIPE`).
/// `Err` with [`io::ErrorKind::WouldBlock`] when it takes nothing.
pub(crate) fn send_nonblocking(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: the pointer and length describe `bytes`, which outlives the call; `send`
            // only reads them; the descriptor belongs to `stream`, which is open.
            let sent = unsafe {
                linux::send(
                    stream.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    linux::MSG_DONTWAIT | linux::MSG_NOSIGNAL,
                )
            };
            if sent >= 0 {
                return Ok(sent as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stream, bytes);
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Asks the kernel to fire this thread's timers (sleeps, timeouts) within `slack` of their
/// deadline instead of the default 50 µs, so short sleeps are precise. Best effort.
pub(crate) fn set_timer_slack(slack: Duration) {
    #[cfg(target_os = "linux")]
    {
        let ns = slack.as_nanos().clamp(1, u128::from(u32::MAX)) as std::ffi::c_ulong;
        // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
        unsafe {
            linux::prctl(linux::PR_SET_TIMERSLACK, ns, 0, 0, 0);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slack;
}
