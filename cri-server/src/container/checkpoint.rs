//! The container checkpoint archive, in the layout CRI-O writes and `checkpointctl` reads:
//!
//! ```text
//! checkpoint/        CRIU's images (and descriptors.json: the init's stdio links)
//! dump.log           CRIU's log of the dump        stats-dump   CRIU's dump statistics
//! config.dump        the container's identity and image (checkpointctl's ContainerConfig)
//! spec.dump          the OCI spec the container ran with
//! bind.mounts        its bind mounts (source, destination, file or directory)
//! rootfs-diff.tar    its writable layer's files     deleted.files  paths it deleted (JSON)
//! ```
//!
//! An archive is input from outside when a container is restored from it, so it is unpacked
//! with the snapshotter's layer unpacker (nothing in it can write outside the target), and its
//! rootfs diff applied the same way.

use crate::error::{Error, Result};
use crisp_snapshotter::diff;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

pub const IMAGES_DIR: &str = "checkpoint";
const CONFIG_DUMP: &str = "config.dump";
const SPEC_DUMP: &str = "spec.dump";
const BIND_MOUNTS: &str = "bind.mounts";
const ROOTFS_DIFF: &str = "rootfs-diff.tar";
const DELETED_FILES: &str = "deleted.files";
/// How long StartContainer waits for CRIU to restore a container (its memory is read back).
pub const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// CRIU writes these into its images directory; CRI-O's archive has them at the top.
const CRIU_TOP_LEVEL: [&str; 2] = ["dump.log", "stats-dump"];
/// A dump's JSON files are small; a bigger one is not ours.
const MAX_JSON: u64 = 16 << 20;

/// `config.dump`: checkpointctl's `metadata.ContainerConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigDump {
    pub id: String,
    pub name: String,
    #[serde(rename = "rootfsImage", skip_serializing_if = "String::is_empty")]
    pub rootfs_image: String,
    #[serde(rename = "rootfsImageRef", skip_serializing_if = "String::is_empty")]
    pub rootfs_image_ref: String,
    #[serde(rename = "rootfsImageName", skip_serializing_if = "String::is_empty")]
    pub rootfs_image_name: String,
    #[serde(rename = "runtime", skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    #[serde(rename = "createdTime")]
    pub created_time: String,
    #[serde(rename = "checkpointedTime")]
    pub checkpointed_time: String,
    #[serde(rename = "restoredTime")]
    pub restored_time: String,
    pub restored: bool,
}

/// One entry of `bind.mounts` (CRI-O recreates missing sources from it).
#[derive(Debug, Serialize)]
struct BindMount {
    source: String,
    destination: String,
    file_type: &'static str,
    permissions: u32,
}

/// Go's zero `time.Time` in JSON: a time that has not happened (`restoredTime` of a dump).
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Go's `time.Time` JSON form (RFC 3339 with nanoseconds), from Unix nanoseconds.
pub fn go_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Completes a dump in `work` (CRIU's images already in `work/checkpoint`) with everything
/// but the images: the dump files, the spec, the bind mounts and the writable layer's diff.
pub fn complete(work: &Path, config: &ConfigDump, spec_json: &Path, upper: &Path) -> Result<()> {
    let images = work.join(IMAGES_DIR);
    for name in CRIU_TOP_LEVEL {
        let _ = std::fs::rename(images.join(name), work.join(name));
    }
    write_json(&work.join(CONFIG_DUMP), config)?;
    let spec = oci_spec::runtime::Spec::load(spec_json)
        .map_err(|e| Error::internal(format!("reading {}", spec_json.display()), e))?;
    spec.save(work.join(SPEC_DUMP))
        .map_err(|e| Error::internal("writing spec.dump", e))?;
    write_json(&work.join(BIND_MOUNTS), &bind_mounts(&spec))?;

    let diff_path = work.join(ROOTFS_DIFF);
    let out = File::create(&diff_path)
        .map_err(|e| Error::internal(format!("creating {}", diff_path.display()), e))?;
    let deleted = diff::write_upper_diff(upper, BufWriter::new(out))
        .map_err(|e| Error::internal("writing the rootfs diff", e))?;
    if !deleted.is_empty() {
        write_json(&work.join(DELETED_FILES), &deleted)?;
    }
    Ok(())
}

fn bind_mounts(spec: &oci_spec::runtime::Spec) -> Vec<BindMount> {
    spec.mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|m| m.typ().as_deref() == Some("bind"))
        .filter_map(|m| {
            let source = m.source().as_ref()?;
            let meta = std::fs::metadata(source).ok()?;
            Some(BindMount {
                source: source.display().to_string(),
                destination: m.destination().display().to_string(),
                file_type: if meta.is_dir() { "directory" } else { "file" },
                permissions: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            })
        })
        .collect()
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::internal(format!("encoding {}", path.display()), e))?;
    std::fs::write(path, bytes)
        .map_err(|e| Error::internal(format!("writing {}", path.display()), e))
}

/// Tars `work` into the archive `location` (mode 0600: it holds the container's memory),
/// written beside it and renamed into place, so a reader never sees half an archive.
pub fn pack(work: &Path, location: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = location
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} names no file", location.display())))?;
    let tmp = location.with_file_name(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::internal(format!("creating {}", tmp.display()), e))?;
    let write = || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(BufWriter::new(file));
        tar.follow_symlinks(false);
        let mut entries = std::fs::read_dir(work)?.collect::<std::io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_type()?.is_dir() {
                tar.append_dir_all(e.file_name(), e.path())?;
            } else {
                tar.append_path_with_name(e.path(), e.file_name())?;
            }
        }
        tar.into_inner()?.into_inner()?.sync_all()
    };
    let written = write().and_then(|()| std::fs::rename(&tmp, location));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::internal(
            format!("writing checkpoint archive {}", location.display()),
            e,
        )
    })
}

/// The archive CreateContainer names as its image, if it names one: CRI-O's convention, an
/// image that is a file on the node (no image reference starts with `/`).
pub fn archive_of(image: &str) -> Option<PathBuf> {
    let path = Path::new(image);
    (path.is_absolute() && path.is_file()).then(|| path.to_path_buf())
}

/// The CRIU images a created container is to be restored from at its start, if it is one.
pub fn pending_images(dir: &crisp_api::ShimDir) -> Option<PathBuf> {
    let images = dir.restore_from().join(IMAGES_DIR);
    images.is_dir().then_some(images)
}

/// What a restore takes from an unpacked archive.
pub struct Unpacked {
    pub config: ConfigDump,
    pub spec: oci_spec::runtime::Spec,
    /// CRIU's images.
    pub images: PathBuf,
    dir: PathBuf,
}

/// Unpacks `archive` into the (new, empty) directory `dest`.
pub fn unpack(archive: &Path, dest: &Path) -> Result<Unpacked> {
    let bad = |what: String| {
        Error::InvalidArgument(format!(
            "{} is not a container checkpoint archive: {what}",
            archive.display()
        ))
    };
    let file = File::open(archive)
        .map_err(|e| Error::NotFound(format!("checkpoint archive {}: {e}", archive.display())))?;
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::internal(format!("creating {}", dest.display()), e))?;
    crisp_snapshotter::unpack_layer(std::io::BufReader::new(file), dest)
        .map_err(|e| bad(e.to_string()))?;
    // Only files and directories: every later lookup in here (and CRIU's) follows links, and
    // a device node would feed whatever it is to CRIU.
    only_files_and_dirs(dest).map_err(bad)?;
    let images = dest.join(IMAGES_DIR);
    if !images.join("inventory.img").is_file() {
        return Err(bad(
            "it holds no CRIU images (checkpoint/inventory.img)".into()
        ));
    }
    let config: ConfigDump = read_json(&dest.join(CONFIG_DUMP)).map_err(bad)?;
    let spec: oci_spec::runtime::Spec = read_json(&dest.join(SPEC_DUMP)).map_err(bad)?;
    Ok(Unpacked {
        config,
        spec,
        images,
        dir: dest.to_path_buf(),
    })
}

fn only_files_and_dirs(dir: &Path) -> std::result::Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if kind.is_dir() {
            only_files_and_dirs(&entry.path())?;
        } else if !kind.is_file() {
            return Err(format!(
                "{} is neither a file nor a directory",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::result::Result<T, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_JSON {
        return Err(format!("{name} is {len} bytes"));
    }
    serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| format!("{name}: {e}"))
}

impl Unpacked {
    /// The checkpointed writable layer's changes, onto the new container's (unmounted) upper.
    pub fn apply_rootfs_diff(&self, upper: &Path) -> Result<()> {
        let diff_path = self.dir.join(ROOTFS_DIFF);
        let diff = match File::open(&diff_path) {
            Ok(f) => Some(std::io::BufReader::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::internal(
                    format!("opening {}", diff_path.display()),
                    e,
                ))
            }
        };
        let deleted: Vec<String> = match self.dir.join(DELETED_FILES) {
            p if p.is_file() => read_json(&p).map_err(Error::InvalidArgument)?,
            _ => Vec::new(),
        };
        diff::apply_upper_diff(upper, diff, &deleted).map_err(|e| {
            Error::InvalidArgument(format!("applying the checkpoint's rootfs diff: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dump_has_checkpointctls_field_names() {
        let c = ConfigDump {
            id: "abc".into(),
            name: "app".into(),
            rootfs_image_ref: "sha256:1".into(),
            created_time: go_time(1_700_000_000_123_456_789),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(v["rootfsImageRef"], "sha256:1");
        assert_eq!(v["createdTime"], "2023-11-14T22:13:20.123456789Z");
        assert!(v.get("rootfsImageName").is_none());
        assert_eq!(v["restored"], false);
    }

    #[test]
    fn a_file_path_names_an_archive_and_a_reference_does_not() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(archive_of(f.path().to_str().unwrap()).is_some());
        assert!(archive_of("busybox:latest").is_none());
        assert!(archive_of("/no/such/archive.tar").is_none());
    }
}
