// TEMPORARY scratch (deleted after use): full-length screenshots.
include!("/tmp/bdash_dd.rs");
#[test]
fn scratch_shots() {
    let lab = Lab::up(LabSpec {
        prefix: "bdash-t2".into(),
        uplinks: vec![UplinkSpec::new("wifi")],
    })
    .unwrap();
    let server = Responder::start(&lab, serde_json::to_string(&canned_status()).unwrap());
    let url = format!("http://{}/", server.addr);
    screenshot(
        &lab,
        Role::Gw,
        &url,
        WAIT_MS,
        std::path::Path::new("/tmp/bdash-phone-full.png"),
        390,
        2100,
    )
    .unwrap();
    screenshot(
        &lab,
        Role::Gw,
        &url,
        WAIT_MS,
        std::path::Path::new("/tmp/bdash-desk.png"),
        1280,
        1100,
    )
    .unwrap();
    server.fail.store(true, Ordering::SeqCst);
    screenshot(
        &lab,
        Role::Gw,
        &url,
        WAIT_MS,
        std::path::Path::new("/tmp/bdash-disc.png"),
        390,
        700,
    )
    .unwrap();
    drop(server);
    lab.teardown();
}
