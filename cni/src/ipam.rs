//! host-local style IPv4 address management.
//!
//! The store is a directory `<data_dir>/<network>/` holding:
//! - one file per allocated address, named by the address (`10.88.0.5`), containing
//!   `<container id>\r\n<ifname>` (the layout of the reference `host-local` plugin);
//! - `last_reserved_ip`: the address handed out last, so allocation goes round-robin and a
//!   released address is not reused at once;
//! - `lock`: every operation holds an exclusive `flock` on it, which serialises concurrent
//!   plugin runs (processes) as well as threads (each operation opens the file anew, so it gets
//!   its own open file description).
//!
//! It is only files, so it survives restarts. The network address, the gateway and the broadcast
//! address are never handed out.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An IPv4 network in CIDR notation (`10.88.0.0/16`). Host bits are cleared on parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: bad prefix length {p:?}"))?;
        let net = Ipv4Net { addr, prefix };
        Ok(Ipv4Net {
            addr: net.network(),
            prefix,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("IPAM store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    #[error("subnet {0} is too small to allocate from")]
    TooSmall(Ipv4Net),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IpamError + '_ {
    move |source| IpamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The address store of one network.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
}

/// An allocated address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub id: String,
    pub ifname: String,
}

struct LockGuard(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl Ipam {
    /// The store for `network` under `data_dir`; creates the directory.
    pub fn new(
        data_dir: &Path,
        network: &str,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<Ipam, IpamError> {
        if subnet.prefix > 30 {
            return Err(IpamError::TooSmall(subnet));
        }
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Ipam {
            dir,
            subnet,
            gateway,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<LockGuard, IpamError> {
        let path = self.dir.join("lock");
        lock_file(&path).map(LockGuard).map_err(io_err(&path))
    }

    fn leases_locked(&self) -> Result<Vec<Lease>, IpamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let content = match fs::read_to_string(entry.path()) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&entry.path())(e)),
            };
            if content.is_empty() {
                // Leases are written unsynced (see `allocate`), so a machine crash can leave
                // one empty; its pod died with the machine. Every writer holds the lock we
                // hold, so an empty lease is never one being written.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let mut lines = content.lines().map(str::trim);
            let id = lines.next().unwrap_or("").to_string();
            let ifname = lines.next().unwrap_or("").to_string();
            out.push(Lease { ip, id, ifname });
        }
        Ok(out)
    }

    /// Every lease in the store.
    pub fn leases(&self) -> Result<Vec<Lease>, IpamError> {
        let _g = self.lock()?;
        self.leases_locked()
    }

    /// Whether no address is leased. Every DEL asks, so this stops at the first lease and reads
    /// none (an empty file is a lease torn by a crash, see `leases_locked`: not a lease).
    pub fn is_empty(&self) -> Result<bool, IpamError> {
        let _g = self.lock()?;
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let is_lease = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok());
            if is_lease && entry.metadata().is_ok_and(|m| m.len() > 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The address held by `id`/`ifname`, if any.
    pub fn get(&self, id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .leases()?
            .into_iter()
            .find(|l| l.id == id && l.ifname == ifname)
            .map(|l| l.ip))
    }

    /// Allocates an address for `id`/`ifname`, or returns the one it already holds.
    pub fn allocate(&self, id: &str, ifname: &str) -> Result<Ipv4Addr, IpamError> {
        let _g = self.lock()?;
        let leases = self.leases_locked()?;
        if let Some(l) = leases.iter().find(|l| l.id == id && l.ifname == ifname) {
            return Ok(l.ip);
        }
        let first = u32::from(self.subnet.network()) + 1;
        let last = u32::from(self.subnet.broadcast()) - 1;
        let size = last - first + 1;
        let last_path = self.dir.join("last_reserved_ip");
        let start = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip))
            .map(|ip| if ip == last { first } else { ip + 1 })
            .unwrap_or(first);
        for i in 0..size {
            let cand = first + (start - first + i) % size;
            let ip = Ipv4Addr::from(cand);
            if ip == self.gateway {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    // Not fsynced: a lease only has to outlive the runtime and this plugin
                    // (the page cache does), since a machine crash takes its pod with it.
                    // Two fsyncs here cost more than the rest of an ADD on a busy disk.
                    f.write_all(format!("{id}\r\n{ifname}").as_bytes())
                        .map_err(io_err(&path))?;
                    crisp_api::atomic_file::replace(&last_path, ip.to_string().as_bytes())
                        .map_err(io_err(&last_path))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(IpamError::Exhausted(self.subnet))
    }

    /// Releases whatever `id`/`ifname` holds (`ifname` None = every lease of `id`). Returns the
    /// released addresses; releasing nothing is fine.
    pub fn release(&self, id: &str, ifname: Option<&str>) -> Result<Vec<Ipv4Addr>, IpamError> {
        let _g = self.lock()?;
        let mut out = Vec::new();
        for l in self.leases_locked()? {
            if l.id == id && ifname.is_none_or(|i| i == l.ifname) {
                let path = self.dir.join(l.ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => out.push(l.ip),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        Ok(out)
    }
}

/// Opens (creating) `path` and takes an exclusive `flock` on it; released on drop.
pub(crate) fn lock_file(path: &Path) -> io::Result<nix::fcntl::Flock<File>> {
    // Readable too: an attachment's lock file also records whether it has per-pod rules
    // (`bridge::Attachment`), which DEL reads through this handle.
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive) {
            Ok(l) => return Ok(l),
            Err((back, nix::errno::Errno::EINTR)) => f = back,
            Err((_, e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn store(dir: &Path, net: &str) -> Ipam {
        let subnet: Ipv4Net = net.parse().unwrap();
        let gw = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        Ipam::new(dir, "testnet", subnet, gw).unwrap()
    }

    #[test]
    fn parses_cidr() {
        let n: Ipv4Net = "10.88.3.4/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.88.0.0/16");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert!(n.contains(Ipv4Addr::new(10, 88, 7, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert!("10.88.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.88.0.0/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn fifty_concurrent_allocations_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = store(dir.path(), "10.99.0.0/24");
        let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..50)
                .map(|i| {
                    let ipam = ipam.clone();
                    s.spawn(move || ipam.allocate(&format!("c{i}"), "eth0").unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let set: HashSet<_> = ips.iter().collect();
        assert_eq!(set.len(), 50, "{ips:?}");
        for ip in &ips {
            assert_ne!(*ip, Ipv4Addr::new(10, 99, 0, 0));
            assert_ne!(*ip, Ipv4Addr::new(10, 99, 0, 1));
            assert_ne!(*ip, Ipv4Addr::new(10, 99, 0, 255));
        }
        assert_eq!(ipam.leases().unwrap().len(), 50);
        // Same id+ifname gets the same address back.
        assert_eq!(ipam.allocate("c7", "eth0").unwrap(), ips[7]);
        // Release then reallocate: round-robin moves on, the store stays consistent.
        assert_eq!(ipam.release("c7", None).unwrap(), vec![ips[7]]);
        assert!(ipam.release("c7", None).unwrap().is_empty());
        assert_eq!(ipam.get("c7", "eth0").unwrap(), None);
        let again = ipam.allocate("c7", "eth0").unwrap();
        assert!(!ips[..7].contains(&again) && !ips[8..].contains(&again));
        assert_eq!(ipam.leases().unwrap().len(), 50);
    }

    #[test]
    fn never_hands_out_reserved_addresses_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = store(dir.path(), "10.99.1.0/29");
        // .1 is the gateway, .0 network, .7 broadcast: .2 ..= .6 remain.
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}"), "eth0").unwrap())
            .collect();
        assert_eq!(
            got,
            (2..=6)
                .map(|h| Ipv4Addr::new(10, 99, 1, h))
                .collect::<Vec<_>>()
        );
        assert!(matches!(
            ipam.allocate("p9", "eth0"),
            Err(IpamError::Exhausted(_))
        ));
        ipam.release("p1", Some("eth0")).unwrap();
        assert_eq!(
            ipam.allocate("p9", "eth0").unwrap(),
            Ipv4Addr::new(10, 99, 1, 3)
        );
        // A new handle on the same directory (a restart) sees the same state.
        let again = store(dir.path(), "10.99.1.0/29");
        assert_eq!(
            again.get("p9", "eth0").unwrap(),
            Some(Ipv4Addr::new(10, 99, 1, 3))
        );
        assert_eq!(again.leases().unwrap().len(), 5);
    }

    /// Not a test on its own: the body of the child processes of the next test.
    #[test]
    fn ipam_child_helper() {
        let Ok(dir) = std::env::var("CRISP_IPAM_CHILD_DIR") else {
            return;
        };
        let id = std::env::var("CRISP_IPAM_CHILD_ID").unwrap();
        let ipam = store(Path::new(&dir), "10.99.2.0/24");
        for n in 0..5 {
            ipam.allocate(&format!("{id}-{n}"), "eth0").unwrap();
        }
    }

    #[test]
    fn concurrent_processes_get_distinct_addresses() {
        // Separate processes share nothing but the files: flock must serialise them.
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..10)
            .map(|i| {
                std::process::Command::new(&exe)
                    .args(["--exact", "ipam::tests::ipam_child_helper", "--nocapture"])
                    .env("CRISP_IPAM_CHILD_DIR", dir.path())
                    .env("CRISP_IPAM_CHILD_ID", format!("proc{i}"))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let leases = store(dir.path(), "10.99.2.0/24").leases().unwrap();
        let set: HashSet<_> = leases.iter().map(|l| l.ip).collect();
        assert_eq!(leases.len(), 50);
        assert_eq!(set.len(), 50);
    }
}
