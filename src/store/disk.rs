//! Whether the embedded store's directory outlives a redeploy: on platforms whose
//! container disk is thrown away (Railway without a volume, Docker without a volume
//! at `DATA_DIR`), the operator is told once that candles will not survive it.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What the environment says of the platform, read by the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// Railway's environment name, from `RAILWAY_ENVIRONMENT` (or the newer
    /// `RAILWAY_ENVIRONMENT_NAME`, `RAILWAY_ENVIRONMENT_ID`), which Railway sets in
    /// every deployment.
    pub railway_environment: Option<String>,
    /// `RAILWAY_VOLUME_MOUNT_PATH`: where Railway mounted the service's volume, set
    /// only when one is attached.
    pub railway_volume: Option<PathBuf>,
}

impl Platform {
    /// Reads the platform's variables through `lookup` (the configuration's).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        Self {
            railway_environment: set("RAILWAY_ENVIRONMENT")
                .or_else(|| set("RAILWAY_ENVIRONMENT_NAME"))
                .or_else(|| set("RAILWAY_ENVIRONMENT_ID")),
            railway_volume: set("RAILWAY_VOLUME_MOUNT_PATH").map(PathBuf::from),
        }
    }
}

/// Why `data_dir` (absolute, symlinks resolved) will not survive a redeploy, or
/// `None` when it will or nothing says otherwise. `in_docker`: `/.dockerenv` exists;
/// `mountinfo`: the text of `/proc/self/mountinfo` (empty when unreadable).
pub fn ephemeral_reason(
    platform: &Platform,
    in_docker: bool,
    mountinfo: &str,
    data_dir: &Path,
) -> Option<String> {
    if let Some(environment) = &platform.railway_environment {
        return match &platform.railway_volume {
            Some(volume) if data_dir.starts_with(volume) => None,
            Some(volume) => Some(format!(
                "on Railway ({environment}) the volume is mounted at {} but DATA_DIR is {}, \
                 outside it: set DATA_DIR={} (or a directory inside it), or set MONGO_URI",
                volume.display(),
                data_dir.display(),
                volume.display()
            )),
            None => Some(format!(
                "on Railway ({environment}) with no volume, the disk is replaced at every \
                 deploy: attach a volume and set DATA_DIR to its mount path, or set MONGO_URI"
            )),
        };
    }
    if in_docker && !persistent_mount_covers(mountinfo, data_dir) {
        return Some(format!(
            "in a Docker container with no volume at DATA_DIR ({}), the store lives in the \
             container's writable layer, removed with the container: mount a volume there \
             (docker run -v candlecast-data:{} …), or set MONGO_URI",
            data_dir.display(),
            data_dir.display()
        ));
    }
    None
}

/// Whether a mount other than `/` holds `data_dir`: one at `data_dir` itself or at
/// an ancestor below `/`. A memory file system (tmpfs, ramfs) does not count.
pub fn persistent_mount_covers(mountinfo: &str, data_dir: &Path) -> bool {
    mount_points(mountinfo).any(|(mount_point, fs_type)| {
        mount_point
            .components()
            .any(|c| matches!(c, Component::Normal(_)))
            && data_dir.starts_with(&mount_point)
            && !matches!(fs_type, "tmpfs" | "ramfs")
    })
}

/// Each line's mount point (field 5, its octal escapes such as `\040` decoded) and
/// file system type (the first field after the ` - ` separator), per proc(5).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = (PathBuf, &str)> {
    mountinfo.lines().filter_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mount_point = mount.split(' ').nth(4)?;
        let fs_type = fs.split(' ').next()?;
        Some((PathBuf::from(unescape(mount_point)), fs_type))
    })
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the warning was given in this process (the backfill command and the
/// service open the store once each, but a test may open it many times).
static WARNED: AtomicBool = AtomicBool::new(false);

/// Looks at this host and warns, once per process, when the embedded store in
/// `data_dir` will not survive a redeploy.
pub fn warn_if_ephemeral(platform: &Platform, data_dir: &Path) {
    let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let in_docker = Path::new("/.dockerenv").exists();
    let mountinfo = if in_docker {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
    } else {
        String::new()
    };
    if let Some(reason) = ephemeral_reason(platform, in_docker, &mountinfo, &data_dir)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            data_dir = %data_dir.display(),
            "candles in the embedded store will not survive a redeploy: {reason}"
        );
    }
}

#[cfg(test)]
mod tests;
