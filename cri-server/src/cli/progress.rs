//! The progress display of `crispd images import` and `crispd images pull`, on stderr (stdout
//! keeps only the result, for scripts). On a terminal, a bar per item, redrawn in place.
//! Otherwise plain lines: one whenever an item changes state and, for items whose bytes moved,
//! one every few seconds, so a log shows a pull's course without a line per chunk.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often plain output repeats the items whose bytes moved.
pub const PLAIN_EVERY: Duration = Duration::from_secs(3);
/// A terminal is redrawn at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
const BAR: usize = 24;
/// Labels on a terminal are cut to this many characters, so a line fits in 80 columns.
const LABEL: usize = 24;

/// One line of the display: a layer, the file being imported, the whole pull.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub label: String,
    pub state: &'static str,
    pub done: u64,
    pub total: u64,
}

pub struct Reporter {
    out: Box<dyn Write + Send>,
    tty: bool,
    /// Plain: each item's state and bytes as its last line gave them.
    printed: HashMap<String, (&'static str, u64)>,
    last_round: Instant,
    /// Terminal: how many lines the last drawing took (to move back over them), and when.
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Reporter {
    /// On stderr: bars when it is a terminal, plain lines otherwise.
    pub fn stderr() -> Reporter {
        let tty = std::io::stderr().is_terminal();
        Reporter::new(Box::new(std::io::stderr()), tty)
    }

    pub fn new(out: Box<dyn Write + Send>, tty: bool) -> Reporter {
        Reporter {
            out,
            tty,
            printed: HashMap::new(),
            last_round: Instant::now(),
            drawn: 0,
            last_draw: None,
        }
    }

    /// Shows `items`; call it whenever they change, and every second or so (plain output
    /// repeats moving items on its own schedule, a terminal is redrawn at a bounded rate).
    pub fn update(&mut self, items: &[Item]) {
        self.show(items, false);
    }

    /// The display's last word: `items` as they ended, whatever the time.
    pub fn finish(&mut self, items: &[Item]) {
        self.show(items, true);
    }

    fn show(&mut self, items: &[Item], last: bool) {
        // A display that cannot be written (stderr closed) must not fail the command.
        let _ = if self.tty {
            self.draw(items, last)
        } else {
            self.lines(items, last)
        };
        let _ = self.out.flush();
    }

    fn draw(&mut self, items: &[Item], force: bool) -> std::io::Result<()> {
        let now = Instant::now();
        if !force && self.last_draw.is_some_and(|t| now - t < REDRAW_EVERY) {
            return Ok(());
        }
        self.last_draw = Some(now);
        if self.drawn > 0 {
            // Back to the first line drawn last time.
            write!(self.out, "\x1b[{}A", self.drawn)?;
        }
        for it in items {
            // Each line cleared first: the new text may be shorter.
            writeln!(self.out, "\r\x1b[2K{}", bar_line(it))?;
        }
        // Lines of items that are gone.
        write!(self.out, "\x1b[J")?;
        self.drawn = items.len();
        Ok(())
    }

    fn lines(&mut self, items: &[Item], last: bool) -> std::io::Result<()> {
        let round = last || self.last_round.elapsed() >= PLAIN_EVERY;
        if round {
            self.last_round = Instant::now();
        }
        for it in items {
            let before = self.printed.get(&it.label);
            let new_state = before.is_none_or(|(s, _)| *s != it.state);
            let moved = before.is_none_or(|(_, d)| *d != it.done);
            if new_state || (round && moved) {
                writeln!(self.out, "{}", plain_line(it))?;
                self.printed.insert(it.label.clone(), (it.state, it.done));
            }
        }
        Ok(())
    }
}

/// `LABEL STATE DONE/TOTAL bytes`: exact numbers, for logs and tests.
fn plain_line(it: &Item) -> String {
    if it.total == 0 && it.done == 0 {
        format!("{} {}", it.label, it.state)
    } else {
        format!("{} {} {}/{} bytes", it.label, it.state, it.done, it.total)
    }
}

fn bar_line(it: &Item) -> String {
    let label = short(&it.label);
    if it.total == 0 {
        return format!("{label:<LABEL$} {}", it.state);
    }
    let filled = (u128::from(it.done.min(it.total)) * BAR as u128 / u128::from(it.total)) as usize;
    format!(
        "{label:<LABEL$} {:<11} [{}{}] {} / {}",
        it.state,
        "=".repeat(filled),
        " ".repeat(BAR - filled),
        human(it.done),
        human(it.total)
    )
}

/// A digest as its first 12 hex digits (as docker shows layers); anything else longer than a
/// label's room keeps its end, where a reference's tag is.
fn short(label: &str) -> String {
    if let Some(hex) = label.strip_prefix("sha256:") {
        return hex.chars().take(12).collect();
    }
    let n = label.chars().count();
    if n <= LABEL {
        return label.to_string();
    }
    let tail: String = label.chars().skip(n - (LABEL - 1)).collect();
    format!("…{tail}")
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    fn item(label: &str, state: &'static str, done: u64, total: u64) -> Item {
        Item {
            label: label.into(),
            state,
            done,
            total,
        }
    }

    /// Plain: a line per state change at once; bytes alone only at the end (or every
    /// PLAIN_EVERY), and only for items that moved.
    #[test]
    fn plain_lines() {
        let sink = Sink::default();
        let mut r = Reporter::new(Box::new(sink.clone()), false);
        r.update(&[item("app:v1", "resolving", 0, 0)]);
        assert_eq!(sink.take(), "app:v1 resolving\n");
        let layers = |a, b| {
            vec![
                item("app:v1", "pulling", a + 7, 17),
                item("sha256:aa", "exists", 7, 7),
                item("sha256:bb", "downloading", a, b),
            ]
        };
        r.update(&layers(0, 10));
        assert_eq!(
            sink.take(),
            "app:v1 pulling 7/17 bytes\nsha256:aa exists 7/7 bytes\nsha256:bb downloading 0/10 bytes\n"
        );
        r.update(&layers(4, 10));
        assert_eq!(sink.take(), "", "bytes alone wait for the next round");
        r.finish(&layers(10, 10));
        assert_eq!(
            sink.take(),
            "app:v1 pulling 17/17 bytes\nsha256:bb downloading 10/10 bytes\n"
        );
    }

    /// A terminal: one bar line per item, redrawn over the last drawing.
    #[test]
    fn bars() {
        let sink = Sink::default();
        let mut r = Reporter::new(Box::new(sink.clone()), true);
        let digest = format!("sha256:{}", "ab".repeat(32));
        r.finish(&[item(&digest, "downloading", 3 << 20, 6 << 20)]);
        let out = sink.take();
        assert!(out.starts_with("\r\x1b[2Kabababababab "), "{out:?}");
        assert!(out.contains(" downloading [="), "{out:?}");
        assert!(
            out.contains(&format!("[{}{}]", "=".repeat(12), " ".repeat(12))),
            "{out:?}"
        );
        assert!(out.contains("3.0 MiB / 6.0 MiB"), "{out:?}");
        r.finish(&[item(&digest, "done", 6 << 20, 6 << 20)]);
        assert!(sink.take().starts_with("\x1b[1A"), "moves back up");
        assert_eq!(short(&"x".repeat(30)), format!("…{}", "x".repeat(23)));
        assert_eq!(human(1536), "1.5 KiB");
    }
}
