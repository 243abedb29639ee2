//! Property tests of doctor's firewall and sshd parsers: the fixtures with their JSON leaves
//! replaced at random, `iptables-save` lines built from the options braid reads, `sshd_config`
//! lines built from the directives it reads; and arbitrary bytes, through the same checks the
//! fuzz targets run ([`super`]).

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

use crate::firewall::eval::{admits, Admission, Probe};
use crate::firewall::iptables::parse_iptables_save;
use crate::firewall::model::{Family, Ruleset};
use crate::firewall::sshd::{self, Directive};

const NFT_FIXTURES: &[&str] = &[
    include_str!("../firewall/fixtures/ufw.nft.json"),
    include_str!("../firewall/fixtures/firewalld.nft.json"),
    include_str!("../firewall/fixtures/exotic.nft.json"),
    include_str!("../firewall/fixtures/vmap.nft.json"),
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z@*]{0,8}".prop_map(Value::from),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({})),
    ]
}

/// Replaces the `n`th node (depth first) of `v` with `with`; returns how many nodes it passed.
fn replace_nth(v: &mut Value, n: &mut usize, with: &Value) {
    if *n == 0 {
        *v = with.clone();
        *n = usize::MAX;
        return;
    }
    *n -= 1;
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| replace_nth(i, n, with)),
        Value::Object(map) => map.values_mut().for_each(|i| replace_nth(i, n, with)),
        _ => {}
    }
}

/// One `-A` line from the options the parser reads, and some it keeps uninterpreted.
fn iptables_rule() -> impl Strategy<Value = String> {
    let option = prop_oneof![
        Just("-p tcp".to_string()),
        Just("-p udp".to_string()),
        Just("! -p tcp".to_string()),
        (1u16..3000).prop_map(|p| format!("--dport {p}")),
        (1u16..3000, 1u16..3000)
            .prop_map(|(a, b)| format!("-m multiport --dports {a},{b}:{}", b + 5)),
        Just("-m conntrack --ctstate RELATED,ESTABLISHED".to_string()),
        Just("-i lo".to_string()),
        Just("--syn".to_string()),
        Just("-m addrtype --dst-type LOCAL".to_string()),
        Just("-m comment --comment \"a \\\"quoted\\\" word\"".to_string()),
        Just("-m recent --name x --rcheck".to_string()),
    ];
    let target = prop_oneof![
        Just("-j ACCEPT"),
        Just("-j DROP"),
        Just("-j REJECT --reject-with icmp-port-unreachable"),
        Just("-j RETURN"),
        Just("-j LOG"),
        Just("-j sub"),
        Just("-g sub"),
        Just("-j INPUT"),
        Just("-j missing"),
    ];
    (
        prop_oneof![Just("INPUT"), Just("sub")],
        vec(option, 0..4),
        target,
    )
        .prop_map(|(chain, opts, t)| format!("-A {chain} {} {t}", opts.join(" ")))
}

/// The plain recursive match (exponential in stars, fine for short strings), to check the
/// linear one against.
fn wildcard_reference(p: &[char], n: &[char]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some(('*', rest)) => (0..=n.len()).any(|i| wildcard_reference(rest, &n[i..])),
        Some((&c, rest)) => {
            matches!(n.split_first(), Some((&d, tail)) if (c == '?' || c == d) && wildcard_reference(rest, tail))
        }
    }
}

fn judge_tcp(r: &Ruleset, port: u16) -> Admission {
    admits(r, Probe::tcp(port, Family::V4))
}

proptest! {
    #[test]
    fn nft_fixture_with_any_leaf_replaced_is_judged(
        fixture in 0..NFT_FIXTURES.len(),
        edits in vec((any::<usize>(), leaf()), 1..4),
    ) {
        let mut doc: Value = serde_json::from_str(NFT_FIXTURES[fixture]).unwrap();
        for (at, with) in edits {
            let mut n = at % 4000;
            replace_nth(&mut doc, &mut n, &with);
        }
        super::nft_json(doc.to_string().as_bytes());
    }

    #[test]
    fn iptables_generated_rules_are_parsed_and_judged(
        rules in vec(iptables_rule(), 0..12),
        policy in prop_oneof![Just("ACCEPT"), Just("DROP")],
    ) {
        let text = format!(
            "*filter\n:INPUT {policy} [0:0]\n:sub - [0:0]\n{}\nCOMMIT\n",
            rules.join("\n")
        );
        super::iptables_save(text.as_bytes());
    }

    #[test]
    fn iptables_one_accepted_port_behind_a_drop_policy_is_the_only_one_admitted(
        port in 1u16..=u16::MAX,
        other in 1u16..=u16::MAX,
    ) {
        prop_assume!(port != other);
        let text = format!("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport {port} -j ACCEPT\nCOMMIT\n");
        let r = Ruleset {
            tables: vec![parse_iptables_save(&text, Family::V4)],
            ..Ruleset::default()
        };
        prop_assert_eq!(judge_tcp(&r, port), Admission::Admitted);
        let blocked = matches!(judge_tcp(&r, other), Admission::Blocked { .. });
        prop_assert!(blocked, "port {} should be blocked", other);
    }

    #[test]
    fn iptables_any_bytes_are_judged(data in vec(any::<u8>(), 0..400)) {
        let mut text = b"*filter\n:INPUT DROP [0:0]\n-A INPUT ".to_vec();
        text.extend(&data);
        super::iptables_save(&text);
        super::iptables_save(&data);
    }

    #[test]
    fn sshd_port_lines_are_read_back_up_to_a_match_block(
        ports in vec(any::<u16>(), 0..6),
        after_match in any::<u16>(),
        upper in any::<bool>(),
    ) {
        let key = if upper { "PORT" } else { "Port" };
        let mut text: String = ports.iter().map(|p| format!("{key} {p} # comment\n")).collect();
        text += &format!("Match User x\nPort {after_match}\n");
        let want: Vec<Directive> = ports.iter().map(|p| Directive::Port(*p)).collect();
        prop_assert_eq!(sshd::directives(&text), want);
    }

    #[test]
    fn sshd_wildcard_without_wildcards_matches_only_itself(name in "[a-z.]{0,12}", other in "[a-z.]{0,12}") {
        prop_assert!(sshd::wildcard(&name, &name));
        prop_assert_eq!(sshd::wildcard(&name, &other), name == other);
        prop_assert!(sshd::wildcard("*", &other));
    }

    #[test]
    fn sshd_wildcard_agrees_with_the_recursive_match(pattern in "[ab?*]{0,8}", name in "[ab]{0,10}") {
        let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
        prop_assert_eq!(sshd::wildcard(&pattern, &name), wildcard_reference(&p, &n));
    }

    #[test]
    fn sshd_any_bytes_keep_the_invariants(data in vec(any::<u8>(), 0..400)) {
        super::sshd_config(&data);
    }
}
