//! Writing tar entries byte by byte, hostile names included: `tar::Builder` refuses `..` and
//! absolute paths, which are exactly what the unpacker must be fed.

use tar::{EntryType, Header};

pub struct Entry<'a> {
    pub path: &'a [u8],
    pub kind: EntryType,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub device: (u32, u32),
    /// PAX records (key, value) for a preceding `x` header; names or link names too long for
    /// the 100-byte fields go there too.
    pub pax: Vec<(&'a [u8], &'a [u8])>,
}

fn pad(out: &mut Vec<u8>) {
    let n = (512 - out.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, n));
}

/// A PAX record: "<len> <key>=<value>\n", where len counts the whole record, its own digits too.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn header(path: &[u8], kind: EntryType, link: &[u8], size: u64) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = path.len().min(old.name.len());
        old.name[..n].copy_from_slice(&path[..n]);
        let n = link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h
}

pub fn append(out: &mut Vec<u8>, e: &Entry<'_>) {
    let mut pax = Vec::new();
    for (k, v) in &e.pax {
        pax_record(&mut pax, k, v);
    }
    if e.path.len() > 100 {
        pax_record(&mut pax, b"path", e.path);
    }
    if e.link.len() > 100 {
        pax_record(&mut pax, b"linkpath", e.link);
    }
    if !pax.is_empty() {
        let mut h = header(b"././@PaxHeader", EntryType::XHeader, b"", pax.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&pax);
        pad(out);
    }
    let mut h = header(e.path, e.kind, e.link, e.data.len() as u64);
    h.set_mode(e.mode);
    // Out-of-range ids and times become tar's base-256 form or an error; both are inputs.
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    let _ = h.set_device_major(e.device.0);
    let _ = h.set_device_minor(e.device.1);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(e.data);
    pad(out);
}

pub fn finish(out: &mut Vec<u8>) {
    out.extend(std::iter::repeat_n(0u8, 1024));
}
