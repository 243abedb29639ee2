//! The sliding-window replay filter SIP022 asks of both ends of a UDP session (WireGuard's
//! algorithm, RFC 6479): a packet id is accepted once, and only while it is within the window
//! behind the highest id seen.
//!
//! The caller checks after the packet was authenticated and its header validated: SIP022 forbids
//! moving the window for a packet that turns out to be invalid.

/// 64-bit words in the bitmap; one of them is always being recycled, so the window proper is
/// `(WORDS - 1) * 64` = 1984 packets.
const WORDS: usize = 32;
/// How far behind the highest id a packet may arrive (reordering on a bonded path).
pub const WINDOW: u64 = ((WORDS - 1) * 64) as u64;

/// The ids seen of one peer's session.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest id accepted so far.
    last: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            last: 0,
            bits: [0; WORDS],
        }
    }
}

/// Why a packet id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// Seen before.
    #[error("packet id {0} was seen before (a replayed or duplicated datagram)")]
    Duplicate(u64),
    /// Too far behind the newest id.
    #[error("packet id {id} is more than {WINDOW} behind the newest ({last})")]
    TooOld {
        /// The refused id.
        id: u64,
        /// The newest id accepted.
        last: u64,
    },
}

impl ReplayWindow {
    /// Accepts `id` once: records it and returns `Ok`, or says why it is refused (and records
    /// nothing).
    pub fn accept(&mut self, id: u64) -> Result<(), Replay> {
        if self.last >= WINDOW && id <= self.last - WINDOW {
            return Err(Replay::TooOld {
                id,
                last: self.last,
            });
        }
        let index = id / 64;
        if id > self.last {
            let current = self.last / 64;
            let fresh = (index - current).min(WORDS as u64);
            for i in 1..=fresh {
                self.bits[((current + i) % WORDS as u64) as usize] = 0;
            }
            self.last = id;
        }
        let word = &mut self.bits[(index % WORDS as u64) as usize];
        let bit = 1u64 << (id % 64);
        if *word & bit != 0 {
            return Err(Replay::Duplicate(id));
        }
        *word |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_window_accepts_each_id_once() {
        let mut w = ReplayWindow::default();
        for id in 0..5000 {
            assert_eq!(w.accept(id), Ok(()), "{id}");
        }
        assert_eq!(w.accept(4999), Err(Replay::Duplicate(4999)));
        assert_eq!(w.accept(0), Err(Replay::TooOld { id: 0, last: 4999 }));
    }

    #[test]
    fn reordered_ids_within_the_window_are_accepted_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(3000), Ok(()));
        assert_eq!(w.accept(3000 - WINDOW + 1), Ok(()));
        assert_eq!(
            w.accept(3000 - WINDOW),
            Err(Replay::TooOld {
                id: 3000 - WINDOW,
                last: 3000
            })
        );
        assert_eq!(w.accept(2999), Ok(()));
        assert_eq!(w.accept(2999), Err(Replay::Duplicate(2999)));
        assert_eq!(w.accept(0), Err(Replay::TooOld { id: 0, last: 3000 }));
    }

    #[test]
    fn a_jump_far_ahead_forgets_the_old_bits_but_not_the_new_id() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(7), Ok(()));
        assert_eq!(w.accept(1_000_000), Ok(()));
        assert_eq!(w.accept(1_000_000), Err(Replay::Duplicate(1_000_000)));
        // The recycled words start empty: an id just behind the jump is new.
        assert_eq!(w.accept(1_000_000 - 64), Ok(()));
        assert_eq!(w.accept(u64::MAX), Ok(()));
        assert_eq!(w.accept(u64::MAX), Err(Replay::Duplicate(u64::MAX)));
    }

    #[test]
    fn seeded_shuffles_accept_every_id_exactly_once() {
        // Ids 0..4000 delivered with local reordering (swaps within 256) and duplicates.
        let mut ids: Vec<u64> = (0..4000).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..ids.len() {
            let j = (i + (next() % 256) as usize).min(ids.len() - 1);
            ids.swap(i, j);
        }
        let mut w = ReplayWindow::default();
        let mut accepted = std::collections::BTreeSet::new();
        for &id in &ids {
            if w.accept(id).is_ok() {
                assert!(accepted.insert(id), "{id} accepted twice");
            }
            assert!(w.accept(id).is_err(), "a duplicate of {id} was accepted");
        }
        assert_eq!(
            accepted.len(),
            ids.len(),
            "reordering within 256 loses nothing"
        );
    }
}
