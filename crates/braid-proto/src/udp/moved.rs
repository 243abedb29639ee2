//! "This session rides another uplink now": the datagram a gateway sends a braid relay for each
//! live UDP session when the uplink sessions ride changes.
//!
//! Why it exists: the relay sends a session's replies to the address its latest datagram came
//! from (SIP022 keys sessions by client session id, so a session survives a change of address).
//! A session moves to the new uplink with its next upstream datagram, but a session that only
//! receives (a QUIC download sends nothing once its downstream is cut, a radio stream, the
//! listening side of a call) has no next datagram: the relay keeps sending into the dead uplink
//! until the application gives up. So when the chosen uplink changes, the gateway sends each
//! session one authenticated datagram over the new uplink to the reserved target
//! [`MOVED_HOST`]`:`[`MOVED_PORT`], with no payload. Like any datagram of the session it takes a
//! fresh packet id and moves the relay's reply address; unlike one, the relay forwards it
//! nowhere and never makes a session for it.
//!
//! Only a braid relay gets it (its control answers say so): a stock server would try to resolve
//! the name (`.invalid` never resolves) and drop it, after a DNS query that leaks nothing useful
//! but is still noise on someone else's resolver.

/// Host name of the announcement's target (`.invalid` never resolves).
pub const MOVED_HOST: &str = "braid-moved.invalid";
/// Port of the announcement's target: the version of its (empty) format.
pub const MOVED_PORT: u16 = 1;

/// Whether a datagram to `host:port` is a move announcement.
pub fn is_moved(host: &str, port: u16) -> bool {
    host == MOVED_HOST && port == MOVED_PORT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reserved_name_and_port_announce_a_move() {
        assert!(is_moved(MOVED_HOST, MOVED_PORT));
        assert!(!is_moved(MOVED_HOST, 2));
        assert!(!is_moved("braid-moved.invalid.", MOVED_PORT));
        assert!(!is_moved(crate::control::CONTROL_HOST, MOVED_PORT));
    }
}
