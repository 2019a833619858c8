//! The previous release's binaries for the upgrade test (tests/tests/upgrade.rs):
//! scripts/build-upgrade-baseline.sh builds the commit named in tests/upgrade-baseline and
//! scripts/test.sh passes their directory in `CRISP_UPGRADE_FROM`.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// Names the directory holding the baseline's crispd, crisp-shim and crisp-bridge.
pub const UPGRADE_FROM_VAR: &str = "CRISP_UPGRADE_FROM";

/// What the upgrade test starts from.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Holds crispd, crisp-shim and crisp-bridge of the baseline release.
    pub bin_dir: PathBuf,
    /// The commit they were built from (the build script's stamp).
    pub commit: String,
}

/// The baseline release's binaries, checked to be there and built from the commit in
/// tests/upgrade-baseline. An error (never a skip) says how to build them: an upgrade test that
/// passes without running would hide exactly the breakage it exists for.
pub fn upgrade_baseline() -> anyhow::Result<Baseline> {
    let how = "scripts/build-upgrade-baseline.sh builds them and prints their directory; run \
               the tests with CRISP_UPGRADE_FROM=<that directory> (scripts/test.sh does both)";
    let Some(dir) = std::env::var_os(UPGRADE_FROM_VAR) else {
        bail!(
            "{UPGRADE_FROM_VAR} is not set: this test needs the previous release's binaries; {how}"
        );
    };
    let mut bin_dir = PathBuf::from(dir);
    // nextest runs each test in its crate's directory; a relative path is the workspace's.
    if bin_dir.is_relative() {
        bin_dir = crate::repo_root().join(bin_dir);
    }
    for bin in ["crispd", "crisp-shim", "crisp-bridge"] {
        let path = bin_dir.join(bin);
        if !path.is_file() {
            bail!("{UPGRADE_FROM_VAR}: {} is missing; {how}", path.display());
        }
    }
    let wanted = wanted_commit()?;
    let stamp = bin_dir.join(".commit");
    let commit = std::fs::read_to_string(&stamp)
        .with_context(|| format!("{UPGRADE_FROM_VAR}: reading {}; {how}", stamp.display()))?
        .trim()
        .to_string();
    if commit != wanted {
        bail!(
            "{UPGRADE_FROM_VAR}: {} holds a build of {commit}, but tests/upgrade-baseline names \
             {wanted}; {how}",
            bin_dir.display()
        );
    }
    Ok(Baseline { bin_dir, commit })
}

/// The commit in tests/upgrade-baseline: its one line that is not a `#` comment.
fn wanted_commit() -> anyhow::Result<String> {
    let path = crate::repo_root().join("tests/upgrade-baseline");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut commits = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    match (commits.next(), commits.next()) {
        (Some(commit), None) => Ok(commit.to_string()),
        _ => bail!("{} must hold exactly one commit id", path.display()),
    }
}
