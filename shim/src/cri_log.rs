//! The CRI container log format kubelet reads:
//! `2016-10-06T00:17:09.669794202Z stdout F hello` — RFC 3339 with nanoseconds, the stream, `F`
//! for a full line or `P` for a partial one (a line longer than [`MAX_LINE`] is split, as
//! containerd does, so one endless line cannot grow memory without bound).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The log file, shared by the stdout and stderr copiers; each record is one `write` under the
/// lock so lines from the two streams never interleave mid-line.
#[derive(Clone)]
pub struct CriLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl CriLog {
    pub fn open(path: PathBuf) -> std::io::Result<CriLog> {
        let file = open_append(&path)?;
        Ok(CriLog {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Reopens the file by path, after kubelet rotated it away (ReopenContainerLog).
    pub fn reopen(&self) -> std::io::Result<()> {
        let f = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = f;
        Ok(())
    }

    fn write_record(&self, stream: Stream, partial: bool, content: &[u8]) {
        let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ");
        let tag = if partial { "P" } else { "F" };
        let mut rec = Vec::with_capacity(content.len() + 48);
        let _ = write!(rec, "{ts} {} {tag} ", stream.as_str());
        rec.extend_from_slice(content);
        rec.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk must not kill the copier: the container would block on a full pipe.
        let _ = f.write_all(&rec);
    }

    /// A line assembler for one stream of this log.
    pub fn writer(&self, stream: Stream) -> LogWriter {
        LogWriter {
            log: self.clone(),
            stream,
            line: Vec::new(),
        }
    }
}

/// Turns one stream's bytes, as they arrive, into log records.
pub struct LogWriter {
    log: CriLog,
    stream: Stream,
    /// The current line, not yet terminated.
    line: Vec<u8>,
}

impl LogWriter {
    pub fn push(&mut self, mut chunk: &[u8]) {
        loop {
            let newline = chunk.iter().position(|b| *b == b'\n');
            self.line
                .extend_from_slice(&chunk[..newline.unwrap_or(chunk.len())]);
            // Split before looking at the newline: how the bytes were chunked by the pipe
            // must not decide the records (a long line ending in this chunk is still cut).
            while self.line.len() >= MAX_LINE {
                let rest = self.line.split_off(MAX_LINE);
                self.log.write_record(self.stream, true, &self.line);
                self.line = rest;
            }
            let Some(pos) = newline else { break };
            self.log.write_record(self.stream, false, &self.line);
            self.line.clear();
            chunk = &chunk[pos + 1..];
        }
    }

    /// EOF: an unterminated last line is logged as a full one.
    pub fn finish(self) {
        if !self.line.is_empty() {
            self.log.write_record(self.stream, false, &self.line);
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(input: &[u8]) -> Vec<String> {
        log_of_chunked(input, 7)
    }

    /// The log of `input` pushed in pieces of `chunk` bytes, as reads from a pipe may split it.
    fn log_of_chunked(input: &[u8], chunk: usize) -> Vec<String> {
        let dir = tempdir();
        let path = dir.join("0.log");
        let log = CriLog::open(path.clone()).unwrap();
        let mut w = log.writer(Stream::Stdout);
        for b in input.chunks(chunk) {
            w.push(b);
        }
        w.finish();
        let s = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        s.lines().map(str::to_string).collect()
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "crisp-log-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn full_lines_are_tagged_f_with_nanosecond_timestamps() {
        let lines = log_of(b"hello\nworld\nno newline");
        assert_eq!(lines.len(), 3);
        for (l, want) in lines.iter().zip(["hello", "world", "no newline"]) {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert_eq!(ts.len(), "2016-10-06T00:17:09.669794202Z".len(), "{ts}");
            assert!(ts.ends_with('Z'));
            assert_eq!(parts.next(), Some("stdout"));
            assert_eq!(parts.next(), Some("F"));
            assert_eq!(parts.next(), Some(want));
        }
    }

    #[test]
    fn long_lines_are_split_into_partials() {
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        // Records must not depend on how reads split the input: odd pieces, pipe-sized ones,
        // and the whole line with its newline in one read.
        for chunk in [7, 4096, MAX_LINE * 2, input.len()] {
            let lines = log_of_chunked(&input, chunk);
            let tags: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
            assert_eq!(tags, ["P", "P", "F"], "reads of {chunk} bytes");
            let total: usize = lines
                .iter()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap().len())
                .sum();
            assert_eq!(total, MAX_LINE * 2 + 10);
        }
    }

    #[test]
    fn empty_lines_are_kept() {
        assert_eq!(log_of(b"\n\n").len(), 2);
    }
}
