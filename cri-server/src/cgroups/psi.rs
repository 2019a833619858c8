//! Pressure stall information of a cgroup v2 (`cpu.pressure`, `memory.pressure`,
//! `io.pressure`). Absent on v1, and where the kernel runs without PSI (`psi=0`, or built
//! without it): the files then are missing or refuse reads with EOPNOTSUPP.

use std::path::Path;

/// One line of a pressure file. `total_us` is cumulative stall time in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

/// A pressure file: "some" tasks stalled, and "full" (all non-idle tasks stalled); the kernel
/// writes a `full` line for cpu only since 5.13, and it is all zeros at the root.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// The CPU, memory and I/O pressure of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupPressure {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

pub fn read(dir: &Path) -> CgroupPressure {
    let file = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| parse(&t))
    };
    CgroupPressure {
        cpu: file("cpu.pressure"),
        memory: file("memory.pressure"),
        io: file("io.pressure"),
    }
}

fn parse(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut psi = PsiLine::default();
        for field in fields {
            let (key, value) = field.split_once('=')?;
            match key {
                "avg10" => psi.avg10 = value.parse().ok()?,
                "avg60" => psi.avg60 = value.parse().ok()?,
                "avg300" => psi.avg300 = value.parse().ok()?,
                "total" => psi.total_us = value.parse().ok()?,
                _ => {}
            }
        }
        *slot = Some(psi);
    }
    Some(Pressure { some: some?, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let p = parse(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n\
             full avg10=0.00 avg60=0.10 avg300=0.00 total=678\n",
        )
        .unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.avg60, 0.25);
        assert_eq!(p.some.total_us, 12345);
        assert_eq!(p.full.unwrap().total_us, 678);
    }

    #[test]
    fn a_kernel_without_full_for_cpu() {
        let p = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n").unwrap();
        assert_eq!(p.full, None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=x total=1\n"), None);
    }
}
