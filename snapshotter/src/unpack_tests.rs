use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Appends one entry with raw (unvalidated) name and link name, which
/// `tar::Builder` would refuse to produce for hostile paths.
fn raw_entry(out: &mut Vec<u8>, path: &str, kind: EntryType, link: &str, data: &[u8], mode: u32) {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

struct Sandbox {
    _dir: tempfile::TempDir,
    sb: std::path::PathBuf,
    layer: std::path::PathBuf,
}

/// Layer root two levels below the sandbox so `../../x` lands in the
/// sandbox, where we can check nothing appeared.
fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let sb = dir.path().to_path_buf();
    let layer = sb.join("root").join("layer");
    fs::create_dir_all(&layer).unwrap();
    Sandbox {
        _dir: dir,
        sb,
        layer,
    }
}

/// Every path in the sandbox outside the layer root.
fn outside_entries(s: &Sandbox) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(&s.sb).unwrap() {
        let p = e.unwrap().path();
        if p != s.sb.join("root") {
            out.push(p.display().to_string());
        }
    }
    for e in fs::read_dir(s.sb.join("root")).unwrap() {
        let p = e.unwrap().path();
        if p != s.layer {
            out.push(p.display().to_string());
        }
    }
    out
}

fn expect_refused(tar: Vec<u8>, s: &Sandbox) -> Error {
    let err = unpack_layer(&tar[..], &s.layer).expect_err("hostile layer must be refused");
    assert!(
        matches!(err, Error::UnsafeEntry { .. }),
        "unexpected error kind: {err}"
    );
    assert_eq!(
        outside_entries(s),
        Vec::<String>::new(),
        "wrote outside the layer"
    );
    err
}

#[test]
fn refuses_dotdot_escape() {
    if !is_root() {
        eprintln!("skipping refuses_dotdot_escape: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "../escape", EntryType::Regular, "", b"x", 0o644);
    let err = expect_refused(finish(t), &s);
    assert!(err.to_string().contains("../escape"), "{err}");

    let mut t = Vec::new();
    raw_entry(
        &mut t,
        "a/../../../escape",
        EntryType::Regular,
        "",
        b"x",
        0o644,
    );
    expect_refused(finish(t), &s);
}

#[test]
fn dotdot_inside_root_is_fine() {
    if !is_root() {
        eprintln!("skipping dotdot_inside_root_is_fine: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "./a/../b", EntryType::Regular, "", b"x", 0o644);
    unpack_layer(&finish(t)[..], &s.layer).unwrap();
    assert_eq!(fs::read(s.layer.join("b")).unwrap(), b"x");
    assert!(!s.layer.join("a").exists());
}

#[test]
fn refuses_absolute_path() {
    if !is_root() {
        eprintln!("skipping refuses_absolute_path: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "/etc/x", EntryType::Regular, "", b"x", 0o644);
    let err = expect_refused(finish(t), &s);
    assert!(err.to_string().contains("/etc/x"), "{err}");
}

#[test]
fn refuses_write_through_absolute_symlink() {
    if !is_root() {
        eprintln!("skipping refuses_write_through_absolute_symlink: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    // evil -> /, then evil/<sandbox>/pwned: a symlink-following extractor
    // would create <sandbox>/pwned (kept inside the test's tempdir).
    let rel_sb = s.sb.strip_prefix("/").unwrap().display().to_string();
    let mut t = Vec::new();
    raw_entry(&mut t, "evil", EntryType::Symlink, "/", b"", 0o777);
    raw_entry(
        &mut t,
        &format!("evil/{rel_sb}/pwned"),
        EntryType::Regular,
        "",
        b"x",
        0o644,
    );
    expect_refused(finish(t), &s);
    assert!(!s.sb.join("pwned").exists());
    // The symlink itself is fine to keep; only writing through it is not.
    assert!(fs::symlink_metadata(s.layer.join("evil"))
        .unwrap()
        .file_type()
        .is_symlink());

    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "evil", EntryType::Symlink, "/", b"", 0o777);
    raw_entry(
        &mut t,
        "evil/etc/passwd",
        EntryType::Regular,
        "",
        b"root::0:0::/:/bin/sh\n",
        0o644,
    );
    expect_refused(finish(t), &s);
}

#[test]
fn refuses_write_through_relative_escaping_symlink() {
    if !is_root() {
        eprintln!(
            "skipping refuses_write_through_relative_escaping_symlink: needs root (chown/mknod)"
        );
        return;
    }
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "up", EntryType::Symlink, "../../", b"", 0o777);
    raw_entry(&mut t, "up/x", EntryType::Regular, "", b"x", 0o644);
    expect_refused(finish(t), &s);
    assert!(!s.sb.join("x").exists());

    // Also through a symlink nested in a directory, and as the leaf's dir.
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "d/", EntryType::Directory, "", b"", 0o755);
    raw_entry(&mut t, "d/up", EntryType::Symlink, "../../..", b"", 0o777);
    raw_entry(&mut t, "d/up/sub/x", EntryType::Regular, "", b"x", 0o644);
    expect_refused(finish(t), &s);
    assert!(!s.sb.join("sub").exists());
}

#[test]
fn symlink_leaf_is_replaced_not_followed() {
    if !is_root() {
        eprintln!("skipping symlink_leaf_is_replaced_not_followed: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    fs::write(s.sb.join("target"), b"orig").unwrap();
    let abs = s.sb.join("target").display().to_string();
    let mut t = Vec::new();
    raw_entry(&mut t, "f", EntryType::Symlink, &abs, b"", 0o777);
    raw_entry(&mut t, "f", EntryType::Regular, "", b"new", 0o644);
    unpack_layer(&finish(t)[..], &s.layer).unwrap();
    assert_eq!(fs::read(s.sb.join("target")).unwrap(), b"orig");
    assert_eq!(fs::read(s.layer.join("f")).unwrap(), b"new");
}

#[test]
fn refuses_escaping_hardlinks() {
    if !is_root() {
        eprintln!("skipping refuses_escaping_hardlinks: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "pw", EntryType::Link, "/etc/passwd", b"", 0o644);
    let err = expect_refused(finish(t), &s);
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
    assert!(!s.layer.join("pw").exists());

    let s = sandbox();
    fs::write(s.sb.join("x"), b"secret").unwrap();
    let mut t = Vec::new();
    raw_entry(&mut t, "h", EntryType::Link, "../../x", b"", 0o644);
    let err = unpack_layer(&finish(t)[..], &s.layer).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(!s.layer.join("h").exists());
    assert_eq!(fs::metadata(s.sb.join("x")).unwrap().nlink(), 1);

    // Through an absolute symlinked directory.
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "d", EntryType::Symlink, "/", b"", 0o777);
    raw_entry(&mut t, "h", EntryType::Link, "d/etc/passwd", b"", 0o644);
    expect_refused(finish(t), &s);
    assert!(!s.layer.join("h").exists());
}

#[test]
fn whiteouts_become_overlay_form() {
    if !is_root() {
        eprintln!("skipping whiteouts_become_overlay_form: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "dir/", EntryType::Directory, "", b"", 0o755);
    raw_entry(&mut t, "dir/.wh.gone", EntryType::Regular, "", b"", 0o644);
    raw_entry(&mut t, "opq/", EntryType::Directory, "", b"", 0o755);
    raw_entry(
        &mut t,
        "opq/.wh..wh..opq",
        EntryType::Regular,
        "",
        b"",
        0o644,
    );
    raw_entry(&mut t, "opq/kept", EntryType::Regular, "", b"k", 0o644);
    raw_entry(
        &mut t,
        "implicit/.wh..wh..opq",
        EntryType::Regular,
        "",
        b"",
        0o644,
    );
    raw_entry(&mut t, ".wh..wh.plnk", EntryType::Regular, "", b"", 0o644);
    let stats = unpack_layer(&finish(t)[..], &s.layer).unwrap();
    assert_eq!(stats.entries, 6);

    let wh = fs::symlink_metadata(s.layer.join("dir/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!s.layer.join("dir/.wh.gone").exists());

    for d in ["opq", "implicit"] {
        let p = CString::new(s.layer.join(d).as_os_str().as_bytes()).unwrap();
        let k = CString::new("trusted.overlay.opaque").unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: valid C strings and a live buffer with its length.
        let n =
            unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(n, 1, "opaque xattr on {d}");
        assert_eq!(buf[0], b'y');
    }
    assert!(!s.layer.join("opq/.wh..wh..opq").exists());
    assert!(s.layer.join("opq/kept").exists());
    assert!(!s.layer.join(".wh..wh.plnk").exists());
}

fn header() -> Header {
    let mut h = Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

#[test]
fn keeps_links_modes_owners_times_xattrs() {
    if !is_root() {
        eprintln!("skipping keeps_links_modes_owners_times_xattrs: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = header();
    dir.set_entry_type(EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_mtime(1_234_567);
    dir.set_uid(1000);
    dir.set_gid(1001);
    dir.set_size(0);
    b.append_data(&mut dir, "bin/", &[][..]).unwrap();

    let mut f = header();
    f.set_entry_type(EntryType::Regular);
    f.set_mode(0o4755);
    f.set_mtime(1_000_000_000);
    f.set_uid(0);
    f.set_gid(0);
    f.set_size(5);
    b.append_pax_extensions([
        ("SCHILY.xattr.user.crisp", &b"v1"[..]),
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
    ])
    .unwrap();
    b.append_data(&mut f, "bin/busybox", &b"hello"[..]).unwrap();

    let mut l = header();
    l.set_entry_type(EntryType::Link);
    l.set_size(0);
    l.set_mode(0o755);
    b.append_link(&mut l, "bin/sh", "bin/busybox").unwrap();

    let mut sl = header();
    sl.set_entry_type(EntryType::Symlink);
    sl.set_size(0);
    sl.set_mode(0o777);
    sl.set_mtime(42);
    sl.set_uid(7);
    sl.set_gid(8);
    b.append_link(&mut sl, "usr/bin/env", "../../bin/busybox")
        .unwrap();

    let mut fifo = header();
    fifo.set_entry_type(EntryType::Fifo);
    fifo.set_size(0);
    fifo.set_mode(0o620);
    b.append_data(&mut fifo, "run/fifo", &[][..]).unwrap();

    let mut dev = header();
    dev.set_entry_type(EntryType::Char);
    dev.set_size(0);
    dev.set_mode(0o666);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    b.append_data(&mut dev, "dev/null", &[][..]).unwrap();

    let data = b.into_inner().unwrap();
    let stats = unpack_layer(&data[..], &s.layer).unwrap();
    assert_eq!(stats.bytes, 5);
    assert_eq!(stats.entries, 6);

    let root = &s.layer;
    let bb = fs::metadata(root.join("bin/busybox")).unwrap();
    let sh = fs::metadata(root.join("bin/sh")).unwrap();
    assert_eq!(bb.ino(), sh.ino(), "hard link must share the inode");
    assert_eq!(bb.nlink(), 2);
    assert_eq!(bb.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(bb.mtime(), 1_000_000_000);

    let d = fs::metadata(root.join("bin")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o750);
    assert_eq!(d.mtime(), 1_234_567, "dir mtime applied after its children");

    let env = root.join("usr/bin/env");
    assert_eq!(fs::read_link(&env).unwrap(), Path::new("../../bin/busybox"));
    let em = fs::symlink_metadata(&env).unwrap();
    assert_eq!(em.mtime(), 42);
    // Implicitly created parents get 0755.
    assert_eq!(
        fs::metadata(root.join("usr")).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    let ff = fs::symlink_metadata(root.join("run/fifo")).unwrap();
    assert!(ff.file_type().is_fifo());
    assert_eq!(ff.permissions().mode() & 0o7777, 0o620);
    let dn = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(dn.file_type().is_char_device());
    assert_eq!(dn.rdev(), makedev(1, 3));

    {
        assert_eq!((d.uid(), d.gid()), (1000, 1001));
        assert_eq!((em.uid(), em.gid()), (7, 8));
        let p = CString::new(root.join("bin/busybox").as_os_str().as_bytes()).unwrap();
        let mut buf = [0u8; 16];
        for (k, want) in [
            ("user.crisp", Some(&b"v1"[..])),
            ("trusted.overlay.redirect", None),
        ] {
            let kc = CString::new(k).unwrap();
            // SAFETY: valid C strings and a live buffer with its length.
            let n = unsafe {
                libc::lgetxattr(p.as_ptr(), kc.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            match want {
                Some(v) => assert_eq!(&buf[..n as usize], v, "{k}"),
                None => assert!(n < 0, "{k} must not be applied from an image"),
            }
        }
    }
}

#[test]
fn replaces_entries() {
    if !is_root() {
        eprintln!("skipping replaces_entries: needs root (chown/mknod)");
        return;
    }
    let s = sandbox();
    let mut t = Vec::new();
    raw_entry(&mut t, "d/", EntryType::Directory, "", b"", 0o755);
    raw_entry(&mut t, "d/keep", EntryType::Regular, "", b"1", 0o644);
    raw_entry(&mut t, "d/", EntryType::Directory, "", b"", 0o700);
    raw_entry(&mut t, "f", EntryType::Regular, "", b"1", 0o644);
    raw_entry(&mut t, "f", EntryType::Symlink, "d", b"", 0o777);
    raw_entry(&mut t, "gone/", EntryType::Directory, "", b"", 0o755);
    raw_entry(&mut t, "gone/x", EntryType::Regular, "", b"1", 0o644);
    raw_entry(&mut t, "gone", EntryType::Regular, "", b"2", 0o644);
    unpack_layer(&finish(t)[..], &s.layer).unwrap();
    assert!(
        s.layer.join("d/keep").exists(),
        "dir over dir keeps contents"
    );
    assert_eq!(
        fs::metadata(s.layer.join("d"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(fs::symlink_metadata(s.layer.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(s.layer.join("gone")).unwrap(), b"2");
}

#[test]
fn pax_time_parsing() {
    assert_eq!(
        parse_pax_time(b"12.5"),
        Some(TimeSpec::new(12, 500_000_000))
    );
    assert_eq!(
        parse_pax_time(b"-1.5"),
        Some(TimeSpec::new(-2, 500_000_000))
    );
    assert_eq!(parse_pax_time(b"7"), Some(TimeSpec::new(7, 0)));
    assert_eq!(parse_pax_time(b"x"), None);
}
