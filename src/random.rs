//! Random bytes from the kernel (`/dev/urandom`): disk and partition
//! GUIDs, MBR signatures, MAC addresses, key material. Fails only when
//! /dev/urandom cannot be read.

use std::io::Read;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}
