//! The capture table against the real `nft`, each test in its own anonymous network namespace
//! (never the host's).
//!
//! `fixtures/capture_*.json` are `nft -j list table inet braid` (nft 1.0.6) after `nft -f` of
//! `fixtures/capture_*.nft`, the text template braid used before its tables were built from the
//! `nftables` crate's types: the typed batch must make exactly the same table.

mod common;

use common::in_netns;
use std::io::Write;
use std::process::{Command, Stdio};

use braid_sys::nftables::{apply, delete_table, table_exists, CaptureRules, NftError, UdpTproxy};
use nftables::batch::Batch;
use nftables::schema::{Chain, NfListObject};
use nftables::types::NfFamily;
use serde_json::Value;

/// `nft -j list table inet NAME` without handles and metainfo, which differ from run to run.
fn listed(table: &str) -> Value {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", table])
        .output()
        .expect("nft runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    normalized(serde_json::from_slice(&out.stdout).expect("nft prints JSON"))
}

fn normalized(mut v: Value) -> Value {
    let items = v["nftables"].as_array_mut().expect("nftables array");
    items.retain(|o| o.get("metainfo").is_none());
    for o in items.iter_mut().filter_map(Value::as_object_mut) {
        for body in o.values_mut().filter_map(Value::as_object_mut) {
            body.remove("handle");
        }
    }
    v
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    normalized(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
}

fn nft_f(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft -f rejected:\n{script}"
    );
}

fn cases() -> Vec<(&'static str, CaptureRules)> {
    let rules = |lan: &[&str], port, exclude: &[&str]| CaptureRules {
        table: "braid".into(),
        lan: lan.iter().map(|s| s.parse().unwrap()).collect(),
        redirect_port: port,
        exclude: exclude.iter().map(|a| a.parse().unwrap()).collect(),
        ..CaptureRules::default()
    };
    vec![
        ("capture_one.json", rules(&["eth1"], 1100, &["203.0.113.7"])),
        (
            "capture_many.json",
            rules(
                &["eth1", "br-lan"],
                12345,
                &["203.0.113.7", "2001:db8::7", "192.0.2.1", "2001:db8::8"],
            ),
        ),
        ("capture_none.json", rules(&["lan0"], 1, &[])),
    ]
}

#[test]
fn capture_table_applied_twice_is_the_table_the_template_made() {
    in_netns("capture_table_applied", || {
        for (golden, rules) in cases() {
            rules.apply().expect("apply");
            assert_eq!(listed("braid"), fixture(golden), "{golden} after apply");
            // A reload replaces the table in one transaction: nothing doubles.
            rules.apply().expect("apply again");
            assert_eq!(listed("braid"), fixture(golden), "{golden} after reload");
        }
    });
}

#[test]
fn capture_table_text_form_makes_the_same_table() {
    in_netns("capture_table_text", || {
        for (golden, rules) in cases() {
            nft_f(&rules.render().expect("render"));
            assert_eq!(listed("braid"), fixture(golden), "{golden} via nft -f");
        }
    });
}

/// The steering table (bypass and capture sets, the uplink check, the UDP TPROXY chain): the
/// kernel takes both forms, and the JSON batch and the text form make the same table.
#[test]
fn steering_table_json_and_text_forms_make_the_same_table() {
    in_netns("capture_table_steering", || {
        let rules = CaptureRules {
            table: "braid".into(),
            lan: vec!["eth1".parse().unwrap()],
            redirect_port: 1100,
            exclude: vec!["203.0.113.7".parse().unwrap()],
            bypass: ["10.0.0.0/8", "fc00::/7", "192.0.2.9/32", "fe80::/10"]
                .map(|n| n.parse().unwrap())
                .to_vec(),
            capture: ["10.30.0.2/32", "2001:db8:30::/64"]
                .map(|n| n.parse().unwrap())
                .to_vec(),
            uplinks: vec!["wan-a".parse().unwrap()],
            udp: Some(UdpTproxy {
                port: 1100,
                mark: 0xb1d,
            }),
        };
        rules.apply().expect("apply");
        let applied = listed("braid");
        let text = rules.render().expect("render");
        delete_table("braid").expect("delete");
        nft_f(&text);
        assert_eq!(listed("braid"), applied, "text form:\n{text}");
        let human = Command::new("nft")
            .args(["list", "table", "inet", "braid"])
            .output()
            .expect("nft runs");
        let human = String::from_utf8_lossy(&human.stdout);
        for line in [
            "ip daddr @capture4",
            "ip6 daddr @bypass6 return",
            "fib daddr oif exists fib daddr oifname != \"wan-a\" return",
            "meta mark set 0x00000b1d tproxy to :1100 accept",
            // What the UDP chain can never steer leaves at its first rules.
            "meta l4proto != udp return",
            "iifname != \"eth1\" return",
        ] {
            assert!(human.contains(line), "no `{line}` in:\n{human}");
        }
    });
}

#[test]
fn delete_table_removes_it_and_a_missing_table_is_fine() {
    in_netns("capture_table_delete", || {
        let (_, rules) = cases().remove(0);
        rules.apply().expect("apply");
        assert!(table_exists("braid").unwrap());
        delete_table("braid").expect("delete");
        assert!(!table_exists("braid").unwrap());
        delete_table("braid").expect("deleting a missing table is fine");
    });
}

#[test]
fn rejected_batch_keeps_nft_message_and_exit_code() {
    in_netns("capture_table_rejected", || {
        let mut batch = Batch::new();
        batch.delete(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: "nothing-here".into(),
            name: "input".into(),
            ..Chain::default()
        }));
        match apply(&batch.to_nftables()) {
            Err(e @ NftError::Rejected { status, .. }) => {
                assert_ne!(status, 0);
                let text = e.to_string();
                assert!(text.contains("No such file or directory"), "{text}");
                assert!(text.contains("fix:"), "{text}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    });
}
