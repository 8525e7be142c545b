//! The Docker image's recipe, checked without a Docker daemon: what the runtime stage
//! sets up for the service's data and its listening address.

mod common;

use common::repo_root;

/// The runtime stage: everything after the last `FROM`.
fn runtime_stage() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let lines: Vec<String> = dockerfile.lines().map(str::to_owned).collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last_from..].to_vec()
}

/// Index of the first line starting with `instruction` and containing `text`.
fn position(stage: &[String], instruction: &str, text: &str) -> Option<usize> {
    stage
        .iter()
        .position(|l| l.trim_start().starts_with(instruction) && l.contains(text))
}

#[test]
fn the_data_volume_belongs_to_the_service_user_before_it_is_declared() {
    let stage = runtime_stage();
    let volume = position(&stage, "VOLUME", "/app/data").expect("VOLUME /app/data");
    let user = position(&stage, "USER", "candlecast").expect("USER candlecast");
    // The RUN that creates the user continues over several lines; find where the
    // directory is made and handed over.
    let made = stage
        .iter()
        .position(|l| l.contains("mkdir -p /app/data"))
        .expect("/app/data is created in the image");
    let owned = stage
        .iter()
        .position(|l| l.contains("chown candlecast:candlecast /app/data"))
        .expect("/app/data is owned by the service user");
    assert!(
        made < volume && owned < volume,
        "created and owned before VOLUME"
    );
    assert!(owned < user, "chown runs as root, before USER");
}

#[test]
fn the_image_leaves_the_listening_address_to_its_dual_stack_default() {
    let stage = runtime_stage();
    assert!(
        !stage
            .iter()
            .any(|l| l.trim_start().starts_with("ENV") && l.contains("BIND_ADDR")),
        "the image must not force BIND_ADDR (0.0.0.0 refuses IPv6)"
    );
}
