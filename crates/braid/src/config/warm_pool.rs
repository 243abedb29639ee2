//! gateway.toml's warm-pool keys: `warm_pool` (`"auto"`, `"off"` or a size) and
//! `relay_handshake_timeout_secs` (what the gateway assumes of a relay that does not say its
//! own handshake timeout). The rules they feed are in `braid_proto::pool`.

use std::time::Duration;

use braid_proto::pool::{Mode, DEFAULT_ASSUMED_TIMEOUT, MAX_IDLE};
use serde::Deserialize;

use super::Invalid;

/// `warm_pool` as written: a word or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum WarmPoolDto {
    /// `"auto"` or `"off"`.
    Word(String),
    /// A fixed size.
    Size(i64),
}

/// The pool's mode; absent means `auto`. A warm connection saves the connect's round trip, and
/// against braid server it is parked and bonded before use (`braid_proto::park`), with braid's
/// relay keeping a short answer on its first subflow (`bond_after_kib`); its idle connections
/// are watched for a path that strips MPTCP (`gateway::pool`), like live ones, and both ends
/// grow its receive buffer when it is used (`relay::IDLED_RCVBUF`), so a bulk transfer on it
/// runs as fast as on a fresh connection (docs/BENCHMARKS.md).
pub(super) fn parse_mode(v: Option<&WarmPoolDto>) -> Result<Mode, Invalid> {
    match v {
        None => Ok(Mode::Auto),
        Some(WarmPoolDto::Word(w)) => match w.as_str() {
            "auto" => Ok(Mode::Auto),
            "off" => Ok(Mode::Off),
            _ => Err(Invalid::new(
                "warm_pool",
                format!("{w:?}"),
                "is not \"auto\", \"off\" or a number",
                format!("use \"auto\" (sized from the connection rate), \"off\", or 1 to {MAX_IDLE}"),
            )),
        },
        Some(WarmPoolDto::Size(0)) => Ok(Mode::Off),
        Some(WarmPoolDto::Size(n)) => match u32::try_from(*n) {
            Ok(n) if n <= MAX_IDLE => Ok(Mode::Fixed(n)),
            _ => Err(Invalid::new(
                "warm_pool",
                n,
                format!("is outside 0–{MAX_IDLE}: idle connections count against the relay's cap on pending handshakes per source"),
                format!("use \"auto\" or a size from 1 to {MAX_IDLE}"),
            )),
        },
    }
}

/// `relay_handshake_timeout_secs`; absent means [`DEFAULT_ASSUMED_TIMEOUT`].
pub(super) fn parse_assumed_timeout(secs: Option<u64>) -> Result<Duration, Invalid> {
    match secs {
        None => Ok(DEFAULT_ASSUMED_TIMEOUT),
        Some(s) => super::server::timeout("relay_handshake_timeout_secs", s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_sizes_and_absence_parse() {
        let w = |s: &str| WarmPoolDto::Word(s.into());
        assert_eq!(parse_mode(None).unwrap(), Mode::Auto);
        assert_eq!(parse_mode(Some(&w("auto"))).unwrap(), Mode::Auto);
        assert_eq!(parse_mode(Some(&w("off"))).unwrap(), Mode::Off);
        assert_eq!(parse_mode(Some(&WarmPoolDto::Size(0))).unwrap(), Mode::Off);
        assert_eq!(
            parse_mode(Some(&WarmPoolDto::Size(3))).unwrap(),
            Mode::Fixed(3)
        );
    }

    #[test]
    fn toml_number_and_word_both_reach_the_dto() {
        #[derive(Deserialize)]
        struct Doc {
            warm_pool: WarmPoolDto,
        }
        let mode = |t: &str| parse_mode(Some(&toml::from_str::<Doc>(t).unwrap().warm_pool));
        assert_eq!(mode("warm_pool = 3").unwrap(), Mode::Fixed(3));
        assert_eq!(mode("warm_pool = \"off\"").unwrap(), Mode::Off);
    }

    fn text(e: Invalid) -> String {
        e.in_file(std::path::Path::new("gateway.toml")).to_string()
    }

    #[test]
    fn bad_word_and_size_out_of_range_name_the_fix() {
        let e = text(parse_mode(Some(&WarmPoolDto::Word("on".into()))).unwrap_err());
        assert!(
            e.contains("`warm_pool` = \"on\"") && e.contains("\"auto\""),
            "{e}"
        );
        for n in [-1, 9, 1000] {
            let e = text(parse_mode(Some(&WarmPoolDto::Size(n))).unwrap_err());
            assert!(e.contains("pending handshakes"), "{e}");
        }
        assert!(parse_assumed_timeout(Some(0)).is_err());
        assert_eq!(
            parse_assumed_timeout(None).unwrap(),
            DEFAULT_ASSUMED_TIMEOUT
        );
    }
}
