//! The salts of the requests the relay accepted within the replay window, and the file format
//! they are kept in across a restart (see [`super::salt_store`]).
//!
//! SIP022 has the server remember every request salt for 60 seconds, and refuse a request whose
//! timestamp is more than 30 seconds off: together they make a recorded request useless to
//! replay. The shadowsocks crate keeps its salts in memory only, so a restart used to open a
//! window in which a request captured just before it could be replayed once more. This log
//! keeps what the crate cannot give back: each accepted salt with the wall-clock time it
//! arrived. Time is passed in (Unix milliseconds), as in `braid-proto`.
//!
//! File: [`MAGIC`], then per salt its arrival time (`u64` big-endian, Unix ms), its length
//! (one byte, 1 to [`MAX_SALT`]) and its bytes.

use std::collections::VecDeque;
use std::time::Duration;

/// How long a salt is remembered: twice the crate's largest clock difference (30 s), as SIP022
/// asks and as the crate's own filter does.
pub const WINDOW: Duration = Duration::from_secs(
    2 * shadowsocks::relay::tcprelay::proxy_stream::protocol::v2::SERVER_STREAM_TIMESTAMP_MAX_DIFF,
);
/// Most salts kept (about 8 MB at 32 bytes each): 4,000 accepted requests a second for a whole
/// window. Past it the oldest are dropped from the file, never from the crate's own filter.
pub const MAX_SALTS: usize = 1 << 18;
/// The longest salt the file holds (SS2022 salts are 16 or 32 bytes).
pub const MAX_SALT: usize = 64;
/// The file's first bytes: a name and the format's version.
pub const MAGIC: [u8; 8] = *b"BRSALTS1";

const WINDOW_MS: u64 = WINDOW.as_millis() as u64;

/// One accepted salt and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    at_ms: u64,
    salt: Box<[u8]>,
}

/// The salts accepted within the last [`WINDOW`], oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SaltLog {
    entries: VecDeque<Entry>,
    changed: bool,
}

/// A salt file that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaltFileError {
    /// Not a file this version of braid wrote.
    #[error("it is not a braid salt file (it does not start with {:?})", String::from_utf8_lossy(&MAGIC))]
    Magic,
    /// The file ends inside a record.
    #[error("it ends inside the record at byte {0}")]
    Truncated(usize),
    /// A record's salt length is 0 or more than [`MAX_SALT`].
    #[error("the record at byte {at} has a salt of {len} bytes (1 to {MAX_SALT} expected)")]
    SaltLength {
        /// Where the record starts.
        at: usize,
        /// The length it gives.
        len: u8,
    },
}

impl SaltLog {
    /// Remembers `salt`, accepted at `now_ms`, and forgets what the window has passed.
    pub fn record(&mut self, salt: &[u8], now_ms: u64) {
        if salt.is_empty() || salt.len() > MAX_SALT {
            return;
        }
        self.expire(now_ms);
        if self.entries.len() == MAX_SALTS {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            at_ms: now_ms,
            salt: salt.into(),
        });
        self.changed = true;
    }

    /// Forgets the salts that arrived [`WINDOW`] or longer before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(e) = self.entries.front() {
            if e.at_ms.saturating_add(WINDOW_MS) > now_ms {
                break;
            }
            self.entries.pop_front();
            self.changed = true;
        }
    }

    /// The salts remembered, oldest first, with their arrival times.
    pub fn salts(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.entries.iter().map(|e| (e.at_ms, &*e.salt))
    }

    /// How many salts are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log changed since the last call (so the file needs writing).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + self.entries.len() * (9 + 32));
        out.extend_from_slice(&MAGIC);
        for e in &self.entries {
            out.extend_from_slice(&e.at_ms.to_be_bytes());
            out.push(e.salt.len() as u8);
            out.extend_from_slice(&e.salt);
        }
        out
    }

    /// Reads a file written by [`SaltLog::encode`], keeping the salts still inside the window at
    /// `now_ms`. A time after `now_ms` (the clock was set back since) counts as `now_ms`, so no
    /// salt outlives the window by more than the window itself.
    pub fn decode(bytes: &[u8], now_ms: u64) -> Result<SaltLog, SaltFileError> {
        let rest = bytes.strip_prefix(&MAGIC).ok_or(SaltFileError::Magic)?;
        let mut log = SaltLog::default();
        let mut at = MAGIC.len();
        let mut rest = rest;
        while !rest.is_empty() {
            let (head, tail) = rest
                .split_at_checked(9)
                .ok_or(SaltFileError::Truncated(at))?;
            let at_ms = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
            let len = head[8];
            if len == 0 || usize::from(len) > MAX_SALT {
                return Err(SaltFileError::SaltLength { at, len });
            }
            let (salt, tail) = tail
                .split_at_checked(usize::from(len))
                .ok_or(SaltFileError::Truncated(at))?;
            log.record(salt, at_ms.min(now_ms));
            at += 9 + usize::from(len);
            rest = tail;
        }
        log.expire(now_ms);
        log.changed = false;
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn recorded_salt_is_kept_for_the_window_then_forgotten() {
        let mut log = SaltLog::default();
        log.record(&[1; 32], T0);
        log.record(&[2; 32], T0 + 30_000);
        log.expire(T0 + WINDOW_MS - 1);
        assert_eq!(log.len(), 2);
        log.expire(T0 + WINDOW_MS);
        assert_eq!(log.salts().map(|(_, s)| s[0]).collect::<Vec<_>>(), [2]);
        log.expire(T0 + 30_000 + WINDOW_MS);
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn file_keeps_only_salts_inside_the_window_at_load() {
        let mut log = SaltLog::default();
        log.record(&[1; 16], T0);
        log.record(&[2; 32], T0 + 50_000);
        let bytes = log.encode();
        // Read back 20 s later: the first is 70 s old and gone, the second is kept.
        let back = SaltLog::decode(&bytes, T0 + 70_000).unwrap();
        assert_eq!(
            back.salts().collect::<Vec<_>>(),
            [(T0 + 50_000, &[2u8; 32][..])]
        );
        // Read back after the window: nothing is kept forever.
        assert_eq!(
            SaltLog::decode(&bytes, T0 + 50_000 + WINDOW_MS)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn file_from_the_future_is_dated_now() {
        let mut log = SaltLog::default();
        log.record(&[1; 32], T0 + 3_600_000);
        let back = SaltLog::decode(&log.encode(), T0).unwrap();
        assert_eq!(back.salts().next().map(|(t, _)| t), Some(T0));
        assert!(
            SaltLog::decode(&back.encode(), T0 + WINDOW_MS)
                .unwrap()
                .len()
                == 0
        );
    }

    #[test]
    fn damaged_files_are_errors() {
        assert_eq!(SaltLog::decode(b"", T0), Err(SaltFileError::Magic));
        assert_eq!(
            SaltLog::decode(b"{\"salts\":", T0),
            Err(SaltFileError::Magic)
        );
        let mut log = SaltLog::default();
        log.record(&[9; 32], T0);
        let bytes = log.encode();
        assert_eq!(
            SaltLog::decode(&bytes[..bytes.len() - 1], T0),
            Err(SaltFileError::Truncated(8))
        );
        let mut zero = MAGIC.to_vec();
        zero.extend_from_slice(&T0.to_be_bytes());
        zero.push(0);
        assert_eq!(
            SaltLog::decode(&zero, T0),
            Err(SaltFileError::SaltLength { at: 8, len: 0 })
        );
    }

    #[test]
    fn full_log_drops_the_oldest() {
        let mut log = SaltLog::default();
        for i in 0..=MAX_SALTS as u64 {
            log.record(&i.to_be_bytes(), T0);
        }
        assert_eq!(log.len(), MAX_SALTS);
        assert_eq!(
            log.salts().next().map(|(_, s)| s.to_vec()),
            Some(1u64.to_be_bytes().to_vec())
        );
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(
            salts in vec((0u64..120_000, vec(any::<u8>(), 1..=MAX_SALT)), 0..40),
        ) {
            let mut log = SaltLog::default();
            let mut now = T0;
            for (step, salt) in &salts {
                now += step / 40;
                log.record(salt, now);
            }
            log.take_changed();
            prop_assert_eq!(SaltLog::decode(&log.encode(), now), Ok(log));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(data in vec(any::<u8>(), 0..300)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(&data);
            if let Ok(log) = SaltLog::decode(&bytes, T0) {
                prop_assert!(log.len() <= data.len() / 10);
            }
            let _ = SaltLog::decode(&data, T0);
        }
    }
}
