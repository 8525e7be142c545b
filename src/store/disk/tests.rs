//! Unit tests of telling whether the embedded store survives a redeploy.

use std::collections::HashMap;
use std::path::Path;

use super::*;

/// A Docker container's mounts: the overlay root, /proc, /dev, a tmpfs, the bind
/// mounts Docker always adds, and `extra`.
fn mountinfo(extra: &str) -> String {
    format!(
        "612 540 0:52 / / rw,relatime master:301 - overlay overlay rw,lowerdir=/x,upperdir=/y\n\
         613 612 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n\
         614 612 0:56 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755\n\
         621 612 254:1 /docker/containers/abc/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw\n\
         622 612 254:1 /docker/containers/abc/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n\
         {extra}"
    )
}

fn platform(vars: &[(&str, &str)]) -> Platform {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    Platform::from_lookup(&|name| map.get(name).map(|v| (*v).to_owned()))
}

#[test]
fn railway_without_a_volume_is_ephemeral() {
    let railway = platform(&[("RAILWAY_ENVIRONMENT", "production")]);
    let reason = ephemeral_reason(&railway, false, "", Path::new("/app/data")).unwrap();
    assert!(reason.contains("Railway (production)"), "{reason}");
    assert!(reason.contains("volume"), "{reason}");
    // The newer name is enough too.
    let railway = platform(&[("RAILWAY_ENVIRONMENT_NAME", "staging")]);
    assert!(ephemeral_reason(&railway, false, "", Path::new("/app/data")).is_some());
}

#[test]
fn railway_with_a_volume_at_or_above_data_dir_is_kept() {
    let with_volume = platform(&[
        ("RAILWAY_ENVIRONMENT", "production"),
        ("RAILWAY_VOLUME_MOUNT_PATH", "/app/data"),
    ]);
    assert_eq!(
        ephemeral_reason(&with_volume, false, "", Path::new("/app/data")),
        None
    );
    assert_eq!(
        ephemeral_reason(&with_volume, true, "", Path::new("/app/data/candles")),
        None
    );
    // A volume elsewhere does not keep DATA_DIR: say where it is.
    let reason = ephemeral_reason(&with_volume, false, "", Path::new("/app/other")).unwrap();
    assert!(reason.contains("DATA_DIR=/app/data"), "{reason}");
    // Not a prefix of the path's text, a parent of its components.
    assert!(ephemeral_reason(&with_volume, false, "", Path::new("/app/data2")).is_some());
}

#[test]
fn docker_without_a_volume_at_data_dir_is_ephemeral() {
    let none = Platform::default();
    let data = Path::new("/app/data");
    assert!(ephemeral_reason(&none, true, &mountinfo(""), data).is_some());
    let volume = "700 612 254:1 /var/lib/docker/volumes/v/_data /app/data rw - ext4 /dev/vda1 rw\n";
    assert_eq!(
        ephemeral_reason(&none, true, &mountinfo(volume), data),
        None
    );
    let parent = "700 612 254:1 /srv /app rw - ext4 /dev/vda1 rw\n";
    assert_eq!(
        ephemeral_reason(&none, true, &mountinfo(parent), data),
        None
    );
    let below = "700 612 254:1 /srv /app/data/sub rw - ext4 /dev/vda1 rw\n";
    assert!(ephemeral_reason(&none, true, &mountinfo(below), data).is_some());
    let memory = "700 612 0:60 / /app/data rw - tmpfs tmpfs rw\n";
    assert!(ephemeral_reason(&none, true, &mountinfo(memory), data).is_some());
}

#[test]
fn escaped_mount_points_are_decoded() {
    let spaced = "700 612 254:1 /x /srv/my\\040data rw - ext4 /dev/vda1 rw\n";
    assert!(persistent_mount_covers(
        &mountinfo(spaced),
        Path::new("/srv/my data/candles")
    ));
}

#[test]
fn outside_any_container_nothing_is_said() {
    assert_eq!(
        ephemeral_reason(
            &Platform::default(),
            false,
            "",
            Path::new("/var/lib/candlecast")
        ),
        None
    );
}
