//! The container's last step before exec: libcontainer's default executor, plus the env values
//! that are not UTF-8 (`crisp_api::raw_env`), which libcontainer's `String` environment cannot
//! carry and which the spec holds as an annotation.

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

#[derive(Clone)]
pub struct CrispExecutor;

impl Executor for CrispExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(raw) = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crisp_api::raw_env::ANNOTATION))
        {
            let values = crisp_api::raw_env::decode(raw).map_err(|e| {
                ExecutorError::Other(format!(
                    "annotation {}: {e}",
                    crisp_api::raw_env::ANNOTATION
                ))
            })?;
            for (key, value) in values {
                // SAFETY: this is the container's init (or an exec'd process's) single thread,
                // just before execvp; nothing else reads the environment concurrently.
                unsafe { std::env::set_var(&key, OsStr::from_bytes(&value)) };
            }
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
