//! The image reference parser (`cri-server/src/image/reference.rs`) on arbitrary strings.
//!
//! Besides "never panics": whatever it accepts, its normalised form (`repo:tag@digest`) parses
//! back to the same reference, and the parts it returns are what the grammar allows.
#![no_main]

use crisp_cri_server::image::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Reference::parse(s) else {
        return;
    };
    assert!(
        r.tag.is_some() || r.digest.is_some(),
        "{s:?}: neither tag nor digest"
    );
    assert!(r.repository.contains('/'), "{s:?}: no domain in {r:?}");
    if let Some(d) = &r.digest {
        assert!(
            d.starts_with("sha256:") && d.len() == 71,
            "{s:?}: digest {d:?}"
        );
    }
    if let Some(t) = &r.tag {
        assert!(
            !t.is_empty() && !t.contains([':', '/', '@']),
            "{s:?}: tag {t:?}"
        );
    }
    let mut normal = r.repository.clone();
    if let Some(t) = &r.tag {
        normal = format!("{normal}:{t}");
    }
    if let Some(d) = &r.digest {
        normal = format!("{normal}@{d}");
    }
    let again = Reference::parse(&normal)
        .unwrap_or_else(|e| panic!("{s:?} → {normal:?}, which does not parse: {e}"));
    assert_eq!(again, r, "{s:?} → {normal:?} parses differently");
    if let Some(t) = r.tagged() {
        assert!(
            Reference::parse(&t).is_ok(),
            "{s:?}: tagged() {t:?} does not parse"
        );
    }
    if let Some(d) = r.digested() {
        assert!(
            Reference::parse(&d).is_ok(),
            "{s:?}: digested() {d:?} does not parse"
        );
    }
});
