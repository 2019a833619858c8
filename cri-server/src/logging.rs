//! crispd's own log on stderr: text lines or JSON objects (`log_format`), with a level that
//! SIGHUP changes without a restart (the one setting that is safe to reload live).

use crate::config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

#[derive(Clone)]
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log level {level:?}: {message}")]
    Level { level: String, message: String },
    #[error("installing the logger: {0}")]
    Install(String),
}

fn parse(level: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(level).map_err(|e| LogError::Level {
        level: level.to_string(),
        message: e.to_string(),
    })
}

pub fn init(level: &str, format: LogFormat) -> Result<LogControl, LogError> {
    let (filter, handle) = reload::Layer::new(parse(level)?);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.map_err(|e| LogError::Install(e.to_string()))?;
    Ok(LogControl { filter: handle })
}

impl LogControl {
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let f = parse(level)?;
        self.filter
            .reload(f)
            .map_err(|e| LogError::Install(e.to_string()))
    }
}
