//! The layer unpacker on well-formed tars of hostile entries: names made of `..`, `.`, `/`,
//! whiteouts and a few shared names (so entries collide, and symlinks and hard links point at
//! each other), link targets that lead out of the layer (relatively, or absolutely into the
//! sandbox's `outside/`), PAX overrides and xattrs. Raw bytes (the `unpack` target) rarely get
//! that far: a tar header has a checksum.
//!
//! Checked: nothing outside the layer root changes (the sandbox), and a tar that names a path
//! outside the root fails instead of being applied somewhere else.
#![no_main]

use arbitrary::Arbitrary;
use crisp_fuzz::sandbox::Sandbox;
use crisp_fuzz::tarball::{self, Entry};
use libfuzzer_sys::fuzz_target;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use tar::EntryType;

#[derive(Arbitrary, Debug)]
enum Comp {
    Name(u8),
    Dot,
    DotDot,
    Empty,
    Whiteout(u8),
    Opaque,
    AufsMeta,
    BadWhiteout,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct PathGen {
    absolute: bool,
    comps: Vec<Comp>,
}

#[derive(Arbitrary, Debug)]
enum Target {
    Path(PathGen),
    /// An absolute path into the sandbox's `outside/` (the canary or a new name there).
    Outside(Option<u8>),
    Root,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Target),
    HardLink(Target),
    Char(u8, u8),
    Block(u8, u8),
    Fifo,
    /// Any type byte, including ones the unpacker refuses or skips.
    Other(u8),
}

#[derive(Arbitrary, Debug)]
enum Pax {
    Xattr(u8, Vec<u8>),
    Uid(Vec<u8>),
    Gid(Vec<u8>),
    Mtime(Vec<u8>),
    Raw(Vec<u8>, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct EntryGen {
    path: PathGen,
    kind: Kind,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    pax: Vec<Pax>,
}

const NAMES: &[&str] = &["a", "b", "c", "etc", "lnk"];
const XATTRS: &[&str] = &[
    "user.x",
    "trusted.overlay.opaque",
    "trusted.overlay.redirect",
    "trusted.x",
    "security.capability",
    "system.posix_acl_access",
];

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

struct Rendered {
    bytes: Vec<u8>,
    /// Lexically outside the root (absolute, or more `..` than components before them).
    escapes: bool,
}

fn render(p: &PathGen) -> Rendered {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut depth: i64 = 0;
    let mut escapes = p.absolute;
    for c in &p.comps {
        let s: Vec<u8> = match c {
            Comp::Name(i) => pick(NAMES, *i).into(),
            Comp::Dot => b".".to_vec(),
            Comp::DotDot => b"..".to_vec(),
            Comp::Empty => Vec::new(),
            Comp::Whiteout(i) => format!(".wh.{}", pick(NAMES, *i)).into_bytes(),
            Comp::Opaque => b".wh..wh..opq".to_vec(),
            Comp::AufsMeta => b".wh..wh.plnk".to_vec(),
            Comp::BadWhiteout => b".wh...".to_vec(),
            // A NUL ends a name in a tar header: the unpacker would see a different path.
            Comp::Raw(b) => b.iter().copied().filter(|&b| b != 0 && b != b'/').collect(),
        };
        match s.as_slice() {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    escapes = true;
                }
            }
            _ => depth += 1,
        }
        parts.push(s);
    }
    let mut bytes = parts.join(&b'/');
    if p.absolute {
        bytes.insert(0, b'/');
    }
    Rendered { bytes, escapes }
}

fn target(t: &Target, outside: &std::path::Path) -> Vec<u8> {
    match t {
        Target::Path(p) => render(p).bytes,
        Target::Outside(None) => outside.join("canary").as_os_str().as_bytes().to_vec(),
        Target::Outside(Some(i)) => outside
            .join(pick(NAMES, *i))
            .as_os_str()
            .as_bytes()
            .to_vec(),
        Target::Root => b"/".to_vec(),
        Target::Raw(b) => b.iter().copied().filter(|&b| b != 0).collect(),
    }
}

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

fuzz_target!(|entries: Vec<EntryGen>| {
    let sandbox = SANDBOX.get_or_init(Sandbox::new);
    let mut tar = Vec::new();
    let mut escapes = false;
    // After a GNU long-name entry the next entry's header name is not the name it gets.
    let mut renamed = false;
    for e in &entries {
        let path = render(&e.path);
        let (kind, link, data, device) = match &e.kind {
            Kind::File(d) => (EntryType::Regular, Vec::new(), d.as_slice(), (0, 0)),
            Kind::Dir => (EntryType::Directory, Vec::new(), &[][..], (0, 0)),
            Kind::Symlink(t) => (
                EntryType::Symlink,
                target(t, &sandbox.outside),
                &[][..],
                (0, 0),
            ),
            Kind::HardLink(t) => (
                EntryType::Link,
                target(t, &sandbox.outside),
                &[][..],
                (0, 0),
            ),
            Kind::Char(a, b) => (EntryType::Char, Vec::new(), &[][..], (*a, *b)),
            Kind::Block(a, b) => (EntryType::Block, Vec::new(), &[][..], (*a, *b)),
            Kind::Fifo => (EntryType::Fifo, Vec::new(), &[][..], (0, 0)),
            Kind::Other(t) => (EntryType::new(*t), Vec::new(), &[][..], (0, 0)),
        };
        // Extension headers are skipped, not applied by path.
        let skipped = matches!(&e.kind, Kind::Other(b'x' | b'g' | b'L' | b'K'));
        escapes |= !skipped && !renamed && path.escapes;
        // The next real entry is not named by its own header after a GNU long name, nor after
        // a skipped header whose long path went into a PAX record (`tarball::append` writes one
        // over 100 bytes): the tar crate keeps that record, and any before it, for the next
        // entry it yields.
        renamed = matches!(&e.kind, Kind::Other(b'L'))
            || (skipped && (renamed || path.bytes.len() > 100));
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for p in &e.pax {
            pax.push(match p {
                Pax::Xattr(k, v) => (
                    format!("SCHILY.xattr.{}", pick(XATTRS, *k)).into_bytes(),
                    v.clone(),
                ),
                Pax::Uid(v) => (b"uid".to_vec(), v.clone()),
                Pax::Gid(v) => (b"gid".to_vec(), v.clone()),
                Pax::Mtime(v) => (b"mtime".to_vec(), v.clone()),
                // Renames would make `escapes` wrong; long names use them anyway.
                Pax::Raw(k, _) if k == b"path" || k == b"linkpath" => continue,
                Pax::Raw(k, v) => (k.clone(), v.clone()),
            });
        }
        tarball::append(
            &mut tar,
            &Entry {
                path: &path.bytes,
                kind,
                link: &link,
                data,
                mode: u32::from(e.mode),
                uid: u64::from(e.uid),
                gid: u64::from(e.gid),
                mtime: u64::from(e.mtime),
                device: (u32::from(device.0), u32::from(device.1)),
                pax: pax
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect(),
            },
        );
    }
    tarball::finish(&mut tar);
    let result = sandbox.unpack(&tar);
    if escapes {
        assert!(
            result.is_err(),
            "a tar with a path outside the root unpacked: {result:?}"
        );
    }
});
