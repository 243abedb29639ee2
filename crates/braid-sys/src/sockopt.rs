//! Raw getsockopt/setsockopt for the options socket2 does not wrap (SOL_MPTCP, TFO).
//!
//! One of the few files of braid-sys that may use `unsafe` (the workspace denies it everywhere
//! else, and each such file allows it for itself): two
//! libc calls, each with its `// SAFETY:` note.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Sets an `int` socket option.
pub(crate) fn set_int<S: AsFd>(sock: &S, level: i32, name: i32, value: i32) -> io::Result<()> {
    let fd = sock.as_fd().as_raw_fd();
    // SAFETY: `fd` is a live descriptor borrowed for the call; the pointer and length describe
    // `value`, a local i32 that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads a socket option into `buf`; returns how many bytes the kernel filled in, which is less
/// than `buf.len()` on kernels whose struct is older (smaller) than ours.
pub(crate) fn get_raw<S: AsFd>(
    sock: &S,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> io::Result<usize> {
    let fd = sock.as_fd().as_raw_fd();
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor; `buf` is valid for writes of `len` bytes and the kernel
    // writes at most `len` bytes and stores the written length back into `len`.
    let rc = unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr().cast(), &mut len) };
    if rc == 0 {
        Ok((len as usize).min(buf.len()))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an `int` socket option.
pub(crate) fn get_int<S: AsFd>(sock: &S, level: i32, name: i32) -> io::Result<i32> {
    let mut buf = [0u8; 4];
    let n = get_raw(sock, level, name, &mut buf)?;
    if n != 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short int socket option",
        ));
    }
    Ok(i32::from_ne_bytes(buf))
}
